"""Published pipeline templates: compiled KFP specs pushed once by CI, pulled back verified by everyone else.

    v = publish("dist/twt-distillation-0.1.0.yaml", "s3://twt/registry", "twt-distillation", "0.1.0",
                metadata={"package_version": "0.1.0", "git_sha": "4e1f0c2a9b3d"}, tags=["latest"])
    set_tag("s3://twt/registry", "twt-distillation", "stable", "0.1.0")   # one PUT: old or new, never neither
    list_versions("s3://twt/registry", "twt-distillation")                # [PipelineVersion(...), ...]
    pull("twt-distillation@stable", "s3://twt/registry", "work/pipeline.yaml")   # sha256 checked

Layout, on the same store as the model registry (``twt.registry.models``) but under its own prefix::

    <root>/pipelines/<name>/<version>/<name>-<version>.yaml     the compiled template, byte for byte
    <root>/pipelines/<name>/<version>/MANIFEST.json             sha256 + size, and the metadata below
    <root>/pipelines/<name>/tags/<tag>.json                     {"version", "sha256", ...}: one object
    <root>/pipelines/<name>/.publishing/<version>/              a claim, only while a publish runs

The manifest (written last by ``twt.core.store.publish_dir``) holds ``kind``, ``pipeline``, ``version``,
``template``, ``sha256``, ``size``, ``created`` and what the caller records: ``package_version``,
``git_sha``, ``kfp_version``, ``images``. A version without a manifest does not exist. The model registry
never sees these: its versions sit at ``<root>/<model>/<version>/`` and ``pipelines/<name>/<version>/`` is
one level deeper. Names and versions follow the model registry's rules (``check_model_name``,
``check_version``: 1-3 numbers, ``1.10`` > ``1.9``); a tag is ``[a-z][a-z0-9-]{0,62}``, so it starts with a
letter and never reads as a version. ``name@latest`` is the ``latest`` tag when one is set, else the
highest published version.

Immutability and concurrency come from the model registry: a publisher claims ``<name>@<version>``
(``twt.registry.claims.publish_claimed``: exactly one of two concurrent publishers gets it), the manifest
is written with ``If-None-Match: *``, and publishing an existing version raises ``VersionExistsError``.

Tags move atomically because a tag is a single small object replaced by a single write: on S3 one PUT
(well below the multipart size, and S3 replaces an object atomically: a GET returns the whole old or the
whole new body with its own ``sha256`` metadata), locally a temporary file beside it and ``os.replace``.
A tag points at a version that is already published and immutable, and records its sha256; a reader
reads the tag once, then that version, so it sees the old version or the new one, complete, never a
missing tag or a mix. Two writers of one tag: the last one wins.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twt.core import names as name_rules
from twt.core import store
from twt.core.store import MANIFEST_NAME, S3Settings, StoreError
from twt.registry.claims import (
    RegistryError,
    RegistryNameError,
    VersionExistsError,
    VersionNotFoundError,
    check_model_name,
    check_version,
    publish_claimed,
    version_key,
)

PREFIX = "pipelines"  # <root>/pipelines/<name>/...
TAGS = "tags"  # <root>/pipelines/<name>/tags/<tag>.json
TAG = name_rules.TAG  # fullmatch (name_rules.is_tag)
KIND = "twt-pipeline-version"
TAG_KIND = "twt-pipeline-tag"
# manifest keys that publish sets (a caller's metadata cannot override them)
RESERVED = ("kind", "pipeline", "version", "template", "sha256", "size", "created")


class TagNotFoundError(VersionNotFoundError):
    """No such tag (and, for ``latest``, no published version either)."""


@dataclass(frozen=True)
class PipelineVersion:
    """One published template: where it is, its sha256, and what it was compiled from."""

    name: str
    version: str
    uri: str  # <root>/pipelines/<name>/<version>
    template: str  # the template's file name inside uri: <name>-<version>.yaml
    sha256: str
    size: int
    created: str  # UTC ISO-8601
    package_version: str | None = None  # twt's version the template was compiled from (= its image tags)
    git_sha: str | None = None  # the commit it was compiled from
    kfp_version: str | None = None  # the SDK that compiled it
    tags: tuple[str, ...] = ()  # tags pointing at it when it was read
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def template_uri(self) -> str:
        return store.parse_uri(self.uri).child(self.template).uri

    def to_dict(self) -> dict[str, Any]:
        keys = ("name", "version", "uri", "template", "sha256", "size", "created")
        extra = ("package_version", "git_sha", "kfp_version")
        return {k: getattr(self, k) for k in keys + extra} | {"tags": list(self.tags)}


@dataclass(frozen=True)
class Tag:
    """What ``<root>/pipelines/<name>/tags/<tag>.json`` holds."""

    name: str
    tag: str
    version: str
    sha256: str  # of the template the tag was set to
    updated: str  # UTC ISO-8601

    def to_json(self) -> str:
        body = {"kind": TAG_KIND, "pipeline": self.name, "tag": self.tag, "version": self.version}
        return json.dumps(body | {"sha256": self.sha256, "updated": self.updated}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, uri: str) -> Tag:
        try:
            raw = json.loads(text)
            found = cls(raw["pipeline"], raw["tag"], raw["version"], raw["sha256"], raw.get("updated", ""))
            if raw.get("kind") != TAG_KIND or not name_rules.is_version(found.version):
                raise ValueError(f"kind {raw.get('kind')!r}, version {found.version!r}")
            return found
        except (ValueError, KeyError, TypeError) as err:
            raise RegistryError(f"malformed tag {uri}: {err}") from err


# ---- names and layout -----------------------------------------------------------------------------------


def check_tag(tag: str) -> str:
    return name_rules.check_tag(tag, RegistryNameError)


def parse_ref(ref: str) -> tuple[str, str]:
    """``"name@version"`` or ``"name@tag"`` → (name, version or tag); tell them apart with ``is_tag``."""
    name, sep, which = ref.partition("@") if isinstance(ref, str) else ("", "", "")
    if not sep or not name or not which or "@" in which:
        raise RegistryNameError(f"invalid pipeline reference {ref!r}: expected NAME@VERSION or NAME@TAG")
    check_model_name(name)
    return name, which if is_tag(which) else check_version(which)


def is_tag(text: str) -> bool:
    return name_rules.is_tag(text)


def template_name(name: str, version: str) -> str:
    """The file name CI compiles to and pull writes by default: ``<name>-<version>.yaml``."""
    return f"{name}-{version}.yaml"


def pipeline_uri(root: store.PathLike, name: str) -> str:
    return store.parse_uri(root).child(f"{PREFIX}/{check_model_name(name)}").uri


def version_uri(root: store.PathLike, name: str, version: str) -> str:
    return store.parse_uri(pipeline_uri(root, name)).child(check_version(version)).uri


def tag_uri(root: store.PathLike, name: str, tag: str) -> str:
    return store.parse_uri(pipeline_uri(root, name)).child(f"{TAGS}/{check_tag(tag)}.json").uri


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _files_under(uri: str, settings: S3Settings | None) -> list[str]:
    """Relative POSIX paths of every file below ``uri`` (recursive; an absent directory has none)."""
    loc = store.parse_uri(uri)
    if loc.scheme == "file":
        base = Path(loc.key)
        found = base.rglob("*") if base.is_dir() else []
        return sorted(p.relative_to(base).as_posix() for p in found if p.is_file())
    base_uri = loc.child("").uri  # the trailing slash spares <name>2/
    return [u[len(base_uri) :] for u in store.list_uris(base_uri, settings=settings)]


def _published(root: store.PathLike, name: str, settings: S3Settings | None) -> list[str]:
    """Versions of ``name`` with a manifest at ``<root>/pipelines/<name>/<version>/``, oldest first.
    Anything else there (tags, claims, strays) is not a version."""
    found = set()
    for rel in _files_under(pipeline_uri(root, name), settings):
        parts = rel.split("/")
        if len(parts) == 2 and parts[1] == MANIFEST_NAME and name_rules.is_version(parts[0]):
            found.add(parts[0])
    return sorted(found, key=version_key)


def list_pipelines(root: store.PathLike, *, settings: S3Settings | None = None) -> list[str]:
    """Names of the pipelines with at least one published version, sorted."""
    names = set()
    for rel in _files_under(store.parse_uri(root).child(PREFIX).uri, settings):
        parts = rel.split("/")
        if len(parts) == 3 and parts[2] == MANIFEST_NAME and name_rules.is_version(parts[1]):
            names.add(parts[0])
    return sorted(n for n in names if name_rules.is_model_name(n))


# ---- tags -----------------------------------------------------------------------------------------------


def _read_small(uri: str, settings: S3Settings | None) -> str:
    """A small file or object as text, its recorded sha256 checked on S3 (``store.get_file``)."""
    loc = store.parse_uri(uri)
    if loc.scheme == "file":
        if not Path(loc.key).is_file():
            raise store.NotFoundError(f"no such file: {loc.key}")
        return Path(loc.key).read_text()  # os.replace swaps whole files: this is the old or the new one
    with tempfile.TemporaryDirectory(prefix="twt-tag-") as tmp:
        store.get_file(uri, Path(tmp) / "object", settings=settings)
        return (Path(tmp) / "object").read_text()


def get_tag(root: store.PathLike, name: str, tag: str, *, settings: S3Settings | None = None) -> Tag:
    """The tag ``name@tag`` as stored; ``TagNotFoundError`` when it is not set."""
    uri = tag_uri(root, name, tag)
    try:
        found = Tag.from_json(_read_small(uri, settings), uri)
    except store.NotFoundError as err:
        raise TagNotFoundError(f"{name}@{tag}: no such tag in {root} (no {uri})") from err
    if (found.name, found.tag) != (name, tag):  # an object copied from elsewhere
        raise RegistryError(f"{name}@{tag}: the tag object {uri} describes {found.name}@{found.tag}")
    return found


def list_tags(root: store.PathLike, name: str, *, settings: S3Settings | None = None) -> dict[str, Tag]:
    """Every tag of ``name``: tag → ``Tag``, sorted by tag."""
    base = store.parse_uri(pipeline_uri(root, name)).child(TAGS).uri
    rels = [r for r in _files_under(base, settings) if "/" not in r and r.endswith(".json")]
    names = [r.removesuffix(".json") for r in rels]  # temporary files of a writer end in .part
    return {t: get_tag(root, name, t, settings=settings) for t in sorted(names) if name_rules.is_tag(t)}


def set_tag(
    root: store.PathLike, name: str, tag: str, version: str, *, settings: S3Settings | None = None
) -> Tag:
    """Point ``name@tag`` at the published ``version`` (new tag, or moved from wherever it pointed).

    The tag object is written in one piece: one S3 PUT, or locally a temporary file renamed over it, so
    a concurrent reader gets the old or the new tag, never none. ``version`` must already be published.
    """
    check_tag(tag)
    found = get_version(root, f"{name}@{check_version(version)}", settings=settings)
    record = Tag(name, tag, version, found.sha256, _now())
    with tempfile.TemporaryDirectory(prefix="twt-tag-") as tmp:
        body = Path(tmp) / f"{tag}.json"
        body.write_text(record.to_json())
        store.put_file(body, tag_uri(root, name, tag), settings=settings)  # local: mkstemp + os.replace
    return record


# ---- versions -------------------------------------------------------------------------------------------


def resolve(
    root: store.PathLike, ref: str, *, settings: S3Settings | None = None
) -> tuple[str, str, Tag | None]:
    """``name@version|tag`` → (name, version, the tag read or None). ``latest`` without a tag is the
    highest published version."""
    name, which = parse_ref(ref)
    if not is_tag(which):
        return name, which, None
    try:
        found = get_tag(root, name, which, settings=settings)
    except TagNotFoundError:
        if which != "latest":
            raise
        versions = _published(root, name, settings)
        if not versions:
            raise TagNotFoundError(f"{name}@latest: no published version of {name!r} in {root}") from None
        return name, versions[-1], None
    return name, found.version, found


def _from_manifest(name: str, version: str, uri: str, manifest: store.Manifest) -> PipelineVersion:
    meta = manifest.metadata
    recorded = (meta.get("kind"), meta.get("pipeline"), meta.get("version"))
    if recorded != (KIND, name, version):  # a manifest copied from elsewhere, or a model's
        raise RegistryError(f"{name}@{version}: the manifest at {uri} describes {recorded}")
    template = str(meta.get("template", ""))
    entry = manifest.files.get(template)
    if entry is None or entry.sha256 != meta.get("sha256"):
        raise RegistryError(
            f"{name}@{version}: the manifest at {uri} does not list its template {template!r}"
        )
    return PipelineVersion(
        name,
        version,
        uri,
        template,
        entry.sha256,
        entry.size,
        str(meta.get("created") or manifest.created),
        meta.get("package_version"),
        meta.get("git_sha"),
        meta.get("kfp_version"),
        metadata=dict(meta),
    )


def get_version(root: store.PathLike, ref: str, *, settings: S3Settings | None = None) -> PipelineVersion:
    """The published version ``ref`` (``name@version|tag``); ``VersionNotFoundError`` if there is none."""
    name, version, tag = resolve(root, ref, settings=settings)
    uri = version_uri(root, name, version)
    try:
        manifest = store.read_manifest(uri, settings=settings)
    except store.NotFoundError as err:
        via = f" (tag {tag.tag})" if tag else ""
        raise VersionNotFoundError(
            f"{name}@{version}{via} does not exist in {root} (no {MANIFEST_NAME})"
        ) from err
    found = _from_manifest(name, version, uri, manifest)
    if tag is not None and tag.sha256 != found.sha256:
        raise store.ChecksumError(
            f"{name}@{tag.tag} points at {version} with sha256 {tag.sha256}, but that version's template has "
            f"{found.sha256}"
        )
    return found


def list_versions(
    root: store.PathLike, name: str, *, settings: S3Settings | None = None
) -> list[PipelineVersion]:
    """The published versions of ``name``, oldest first, each with the tags pointing at it."""
    tags = list_tags(root, name, settings=settings)
    out = []
    for version in _published(root, name, settings):
        found = get_version(root, f"{name}@{version}", settings=settings)
        pointing = tuple(t for t, rec in tags.items() if rec.version == version)
        out.append(dataclasses.replace(found, tags=pointing))
    return out


# ---- publish and pull -----------------------------------------------------------------------------------


def publish(
    template: store.PathLike,
    root: store.PathLike,
    name: str,
    version: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    tags: Iterable[str] = (),
    settings: S3Settings | None = None,
) -> PipelineVersion:
    """Publish the compiled ``template`` as ``name@version`` under ``root``, then point ``tags`` at it.

    ``metadata``: JSON values recorded in the manifest (``package_version``, ``git_sha``, ``kfp_version``,
    ``images``, ...); the keys in ``RESERVED`` are set here. A published version is immutable:
    ``VersionExistsError``, before anything is written. Tags are moved after the version is complete;
    if moving one fails, the version stays published and the error says so.
    """
    src = Path(template)
    check_model_name(name)
    check_version(version)
    tags = [check_tag(t) for t in dict.fromkeys([tags] if isinstance(tags, str) else tags)]
    if not src.is_file():
        raise store.NotFoundError(f"no such template: {src}")
    uri = version_uri(root, name, version)
    if store.exists(uri, settings=settings):
        raise VersionExistsError(
            f"{name}@{version} is already published at {uri}; versions are immutable (bump the version)"
        )
    with tempfile.TemporaryDirectory(prefix="twt-pipeline-") as tmp:
        stage = Path(tmp)
        fname = template_name(name, version)
        shutil.copyfile(src, stage / fname)  # hashed and sent from this copy: what is recorded goes up
        sha, size = store.sha256_file(stage / fname), (stage / fname).stat().st_size
        meta = {k: v for k, v in dict(metadata or {}).items() if k not in RESERVED}
        meta |= {"kind": KIND, "pipeline": name, "version": version, "template": fname}
        meta |= {"sha256": sha, "size": size, "created": _now()}
        claims_root = store.parse_uri(root).child(PREFIX).uri  # versions live at <root>/pipelines/<name>/
        manifest = publish_claimed(stage, claims_root, name, version, meta, settings)
    found = _from_manifest(name, version, uri, manifest)
    for done, tag in enumerate(tags):
        try:
            set_tag(root, name, tag, version, settings=settings)
        except StoreError as err:
            moved = f" (moved: {', '.join(tags[:done])})" if done else ""
            raise type(err)(
                f"{found.ref} is published, but moving tag {tag!r} failed{moved}: {err}; "
                f"retry with `twt pipeline tag {found.ref} {' '.join(tags[done:])}`"
            ) from err
    return dataclasses.replace(found, tags=tuple(tags))


def pull(
    ref: str,
    root: store.PathLike,
    to_file: store.PathLike,
    *,
    overwrite: bool = False,
    settings: S3Settings | None = None,
) -> PipelineVersion:
    """Download the template of ``ref`` (``name@version|tag``) to ``to_file``, checked against its sha256.

    The bytes land in a temporary file beside ``to_file`` that is renamed into place only when its sha256
    is the manifest's (and the tag's, when ``ref`` names one), so a tampered or truncated template raises
    ``ChecksumError`` and leaves ``to_file`` as it was (absent, for a new file). An existing ``to_file``
    is refused unless ``overwrite``.
    """
    dst = Path(to_file)
    if dst.is_dir() or (dst.exists() and not overwrite):
        raise RegistryError(f"{dst} exists; pull writes a new file (overwrite it with --force)")
    found = get_version(root, ref, settings=settings)
    try:
        store.get_file(found.template_uri, dst, sha256=found.sha256, settings=settings)
    except StoreError as err:
        raise type(err)(f"pull of {found.ref} refused, nothing written to {dst}: {err}") from err
    return found
