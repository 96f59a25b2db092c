"""The model registry: an approved student published immutable and versioned, pulled back verified.

    v = publish("runs/r1/stage3", "s3://twt/registry", "twt-student", metrics=metrics, gate=verdict)
    list_versions("s3://twt/registry", "twt-student")      # [RegistryVersion(version="1", ...), ...]
    show("s3://twt/registry", "twt-student@latest")         # the manifest metadata
    pull("twt-student@1", "s3://twt/registry", "work/student")

Layout: ``<root>/<model>/<version>/`` holds the model files (a Hugging Face directory with its ``twt.json``),
a ``README.md`` model card and ``MANIFEST.json`` (sha256 and size of every file, plus ``model``, ``version``,
``created``, ``metrics``, ``gate``, ``lineage``), written last by ``twt.core.store.publish_dir``: a version
without a manifest does not exist, and listing, ``show`` and ``pull`` ignore it. ``root`` is ``s3://bucket/prefix``,
``file://`` or a local directory.

Names (``twt.core.names``, whole-string matches): a model is ``[a-z0-9][a-z0-9._-]{0,62}`` without ``..``. A
version is 1 to 3 dot-separated numbers without leading zeros (``3``, ``1.2``, ``1.2.3``); versions sort
numerically (``1.10`` > ``1.9`` > ``1``). ``auto`` = one more than the largest leading number published or
claimed (``1`` first), so it is always ``latest``.

Concurrency: before uploading, a publisher *claims* the version by publishing an empty directory at
``<root>/<model>/.publishing/<version>/`` whose manifest names its owner (host, pid, a random id) and time
(the store's ``If-None-Match: *`` manifest on S3, an atomic rename locally). Of two publishers of one version
exactly one gets the claim; the other fails with ``VersionExistsError`` naming the claim and its owner
before writing a byte, so it can never overwrite the winner's files. ``auto`` moves on to the next number.
A live process's claim and staging directories (``.<version>.<pid>@<host>.<random>.tmp``) are removed
by that process only.

Leftovers: a killed publish leaves its claim (and a local staging directory, or S3 uploads without a
manifest); no version appears. A claim is *abandoned* when its owner is gone (same host) or it is older
than ``stale_after_s()`` (6 hours; ``TWT_REGISTRY_STALE_AFTER_S``). The next publish of that version
reclaims an abandoned claim itself (one reclaimer at a time: it first publishes a lock named after the
claim's id), and removes abandoned local staging of the model; ``gc`` (``twt registry gc``) removes every
abandoned claim, staging directory and S3 upload and says what it removed.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twt.core import names as name_rules
from twt.core import store
from twt.core.records import read_json
from twt.core.schema import RegistryConfig, schema_default
from twt.core.store import MANIFEST_NAME, Manifest, S3Settings, StoreError
from twt.registry.card import metric_rows, render_card
from twt.registry.claims import (
    RegistryError,
    RegistryNameError,
    VersionExistsError,
    VersionNotFoundError,
    _claimed,
    _local_leftovers,
    check_model_name,
    check_version,
    publish_claimed,
    stale_after_s,
    version_key,
    version_uri,
)

MODEL_NAME = name_rules.MODEL_NAME  # match with fullmatch (name_rules.is_model_name), never re.match
VERSION = name_rules.VERSION
AUTO_ATTEMPTS = 50  # versions an "auto" publish tries when others publish at the same time
CARD_NAME = "README.md"
KIND = "twt-registry-version"
SKIPPED_DIRS = ("checkpoints",)  # training state, not part of the model (train.py removes it when done)


@dataclass(frozen=True)
class RegistryVersion:
    """One published version: where it is, how big, and its manifest metadata (metrics, gate, lineage)."""

    model: str
    version: str
    uri: str  # <root>/<model>/<version>
    created: str  # UTC ISO-8601
    files: int  # files in the manifest, the card included
    total_bytes: int
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def headline(self) -> dict[str, Any]:
        """Accuracy and mean output tokens of the published student, when recorded."""
        rows = metric_rows(self.metadata.get("metrics"), self.metadata.get("gate"))
        numbers = rows[0][2] if rows and rows[0][1] else {}
        return {k: numbers.get(k) for k in ("accuracy", "mean_output_tokens")}

    @classmethod
    def from_manifest(cls, model: str, version: str, uri: str, manifest: Manifest) -> RegistryVersion:
        return cls(
            model,
            version,
            uri,
            str(manifest.metadata.get("created") or manifest.created),
            len(manifest.files),
            sum(e.size for e in manifest.files.values()),
            dict(manifest.metadata),
        )


# ---- names ----------------------------------------------------------------------------------------------


def parse_ref(ref: str) -> tuple[str, str]:
    """``"name@version"`` or ``"name@latest"`` → (name, version); both parts validated."""
    name, sep, version = ref.partition("@") if isinstance(ref, str) else ("", "", "")
    if not sep or not name or not version or "@" in version:
        raise RegistryNameError(f"invalid model reference {ref!r}: expected NAME@VERSION or NAME@latest")
    check_model_name(name)
    return name, version if version == "latest" else check_version(version)


# ---- layout ---------------------------------------------------------------------------------------------


def _published(root: store.PathLike, model: str | None, settings: S3Settings | None) -> list[tuple[str, str]]:
    """(model, version) of every directory at ``<root>/<model>/<version>/`` that has a manifest."""
    loc = store.parse_uri(root)
    if loc.scheme == "file":
        base = Path(loc.key)
        found = base.glob(f"{model or '*'}/*/{MANIFEST_NAME}") if base.is_dir() else []
        rels = [p.relative_to(base).as_posix() for p in found]
    else:
        base = loc.child("").uri  # s3://bucket/prefix/ (the slash spares prefix2/)
        listed = store.list_uris(loc.child(f"{model}/" if model else "").uri, settings=settings)
        rels = [uri[len(base) :] for uri in listed if uri.endswith(f"/{MANIFEST_NAME}")]
    out = []
    for rel in rels:
        parts = rel.split("/")
        if len(parts) == 3 and name_rules.is_model_name(parts[0]) and name_rules.is_version(parts[1]):
            out.append((parts[0], parts[1]))  # anything else (claims, staging, strays) is not a version
    return out


def list_models(root: store.PathLike, *, settings: S3Settings | None = None) -> list[str]:
    """Names of the models with at least one published version, sorted."""
    return sorted({m for m, _ in _published(root, None, settings)})


def list_versions(
    root: store.PathLike, model: str | None = None, *, settings: S3Settings | None = None
) -> list[RegistryVersion] | list[str]:
    """The published versions of ``model``, oldest first (one manifest read each); no model: the names."""
    if model is None:
        return list_models(root, settings=settings)
    check_model_name(model)
    versions = sorted({v for _, v in _published(root, model, settings)}, key=version_key)
    return [get_version(root, f"{model}@{v}", settings=settings) for v in versions]


def resolve(root: store.PathLike, ref: str, *, settings: S3Settings | None = None) -> tuple[str, str]:
    """``name@version|latest`` → (name, version); ``latest`` is the highest published version."""
    model, version = parse_ref(ref)
    if version != "latest":
        return model, version
    versions = [v for _, v in _published(root, model, settings)]
    if not versions:
        raise VersionNotFoundError(f"{model}@latest: no published version of {model!r} in {root}")
    return model, max(versions, key=version_key)


def get_version(root: store.PathLike, ref: str, *, settings: S3Settings | None = None) -> RegistryVersion:
    """The published version ``ref`` (``name@version|latest``); ``VersionNotFoundError`` if it is not one."""
    model, version = resolve(root, ref, settings=settings)
    uri = version_uri(root, model, version)
    try:
        manifest = store.read_manifest(uri, settings=settings)
    except store.NotFoundError as err:
        raise VersionNotFoundError(
            f"{model}@{version} does not exist in {root} (no {MANIFEST_NAME})"
        ) from err
    recorded = (manifest.metadata.get("model", model), manifest.metadata.get("version", version))
    if recorded != (model, version):  # a manifest copied from elsewhere
        raise RegistryError(f"{model}@{version}: the manifest at {uri} describes {recorded[0]}@{recorded[1]}")
    return RegistryVersion.from_manifest(model, version, uri, manifest)


def show(root: store.PathLike, ref: str, *, settings: S3Settings | None = None) -> dict[str, Any]:
    """The manifest metadata of ``ref`` (model, version, created, metrics, gate, lineage)."""
    return get_version(root, ref, settings=settings).metadata


# ---- publish --------------------------------------------------------------------------------------------


def _model_files(model_dir: Path) -> list[tuple[str, Path]]:
    """Files to publish: everything but hidden paths, ``checkpoints/``, a manifest and a README we replace."""
    if not (model_dir / "config.json").is_file():
        raise RegistryError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    files = []
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts) or rel.parts[0] in SKIPPED_DIRS:
            continue
        if rel.as_posix() not in (MANIFEST_NAME, CARD_NAME):
            files.append((rel.as_posix(), path.resolve()))
    return files


def _next_version(root: store.PathLike, model: str, after: int, settings: S3Settings | None) -> str:
    taken = [*(v for _, v in _published(root, model, settings)), *_claimed(root, model, settings)]
    return str(max([after, *(version_key(v)[0] for v in taken)]) + 1)


# ---- claims and leftovers ----------------------------------------------------------------------------------


def find_run_version(
    root: store.PathLike,
    model: str,
    run_id: str,
    files: Mapping[str, store.FileEntry],
    *,
    settings: S3Settings | None = None,
) -> RegistryVersion | None:
    """The version of ``model`` that run ``run_id`` published with exactly ``files`` (path → checksum; the
    card aside), or None; no run id: None."""
    if not run_id:
        return None
    wanted = {rel: entry.sha256 for rel, entry in files.items()}
    for _, version in sorted(_published(root, model, settings), key=lambda mv: version_key(mv[1])):
        uri = version_uri(root, model, version)
        manifest = store.read_manifest(uri, settings=settings)
        if manifest.metadata.get("run_id") != run_id:
            continue
        published = {rel: entry.sha256 for rel, entry in manifest.files.items() if rel != CARD_NAME}
        if published == wanted:
            return RegistryVersion.from_manifest(model, version, uri, manifest)
    return None


def publish(
    model_dir: store.PathLike,
    root: store.PathLike,
    model: str,
    version: str = schema_default(RegistryConfig, "version"),
    *,
    metrics: Mapping[str, Any] | None = None,
    gate: Mapping[str, Any] | Any = None,
    lineage: Mapping[str, Any] | None = None,
    card_extra: Mapping[str, str] | str | None = None,
    settings: S3Settings | None = None,
    tags: Sequence[str] = (),
    run_id: str = "",
) -> RegistryVersion:
    """Publish ``model_dir`` as ``model@version`` under ``root`` with a model card; versions are immutable.

    ``metrics``: evaluated model name → numbers (``twt.method.evaluate``'s format, see ``metric_rows``).
    ``gate``: the verdict (a ``twt.method.gate.Verdict`` or its dict). ``lineage`` defaults to
    ``model_dir/twt.json``. ``tags``: labels recorded in the manifest.
    ``run_id`` (the pipeline run, recorded in the manifest) makes a retry idempotent: when this run already
    published these very files as a version of ``model`` (the auto version, or the one asked for), that
    version is returned and nothing is written.
    ``card_extra``: markdown appended to the card (a string, or section title → text).
    Files under hidden paths and ``checkpoints/`` are not published; a ``README.md`` is replaced by the card.
    """
    src = Path(model_dir)
    check_model_name(model)
    if version != "auto":
        check_version(version)
    if not src.is_dir():
        raise store.NotFoundError(f"no such model directory: {src}")
    files = _model_files(src)
    model_loc = store.parse_uri(root).child(model)
    if model_loc.scheme == "file":  # what killed publishes of this model left behind (owner gone, or old)
        for item in _local_leftovers(Path(model_loc.key), stale_after_s(), time.time()):
            shutil.rmtree(item.uri, ignore_errors=True)
    sums = {rel: store.FileEntry(store.sha256_file(p), p.stat().st_size) for rel, p in files}
    if (done := find_run_version(root, model, run_id, sums, settings=settings)) is not None and (
        version in ("auto", done.version)
    ):
        return done  # a retry of a run that already published these files
    if version != "auto" and store.exists(uri := version_uri(root, model, version), settings=settings):
        raise VersionExistsError(f"{model}@{version} already exists at {uri}; versions are immutable")
    if lineage is None and (src / "twt.json").is_file():
        lineage = read_json(src / "twt.json")
    if gate is not None and hasattr(gate, "to_dict"):
        gate = gate.to_dict()  # a twt.method.gate.Verdict
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    extra_meta = {"metrics": metrics, "gate": gate, "lineage": lineage}

    def attempt(version: str) -> RegistryVersion:
        uri = version_uri(root, model, version)
        meta = {"kind": KIND, "model": model, "version": version, "created": created, "tags": list(tags)}
        meta["run_id"] = run_id or None
        meta.update({k: None if v is None else dict(v) for k, v in extra_meta.items()})
        with tempfile.TemporaryDirectory(prefix="twt-publish-") as tmp:
            stage = Path(tmp)  # links to the model files plus the card: nothing big is copied here
            for rel, path in files:
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                (stage / rel).symlink_to(path)
            (stage / CARD_NAME).write_text(render_card(meta, sums, uri, card_extra))
            manifest = publish_claimed(stage, root, model, version, meta, settings)
        return RegistryVersion.from_manifest(model, version, uri, manifest)

    if version != "auto":
        return attempt(version)
    tried = 0  # auto: a lost race (or a killed publisher's claim) moves on to the next number
    for n in range(1, AUTO_ATTEMPTS + 1):
        candidate = _next_version(root, model, tried, settings)
        try:
            return attempt(candidate)
        except VersionExistsError:
            if n == AUTO_ATTEMPTS:
                raise
            tried = int(candidate)
    raise AssertionError("unreachable")  # pragma: no cover


# ---- pull -----------------------------------------------------------------------------------------------


def pull(
    ref: str, root: store.PathLike, to_dir: store.PathLike, *, settings: S3Settings | None = None
) -> RegistryVersion:
    """Download ``ref`` into ``to_dir`` (new or empty), every file checked against the manifest.

    Files land in a hidden sibling renamed into place once all check out (``store.get_dir``), so a corrupt
    or missing file raises ``ChecksumError``/``NotFoundError`` and leaves nothing at ``to_dir``.
    """
    dst = Path(to_dir)
    if not store.is_new_dir(dst):
        raise RegistryError(f"{dst} exists and is not an empty directory; pull needs a new or empty one")
    found = get_version(root, ref, settings=settings)
    try:
        store.get_dir(found.uri, dst, settings=settings)
    except StoreError as err:
        raise type(err)(f"pull of {found.ref} refused, nothing written to {dst}: {err}") from err
    return found
