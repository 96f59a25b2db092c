"""The model registry: an approved student published immutable and versioned, pulled back verified.

    v = publish("runs/r1/stage3", "s3://twt/registry", "twt-student", metrics=metrics, gate=verdict)
    list_versions("s3://twt/registry", "twt-student")      # [RegistryVersion(version="1", ...), ...]
    show("s3://twt/registry", "twt-student@latest")         # the manifest metadata
    pull("twt-student@1", "s3://twt/registry", "work/student")

Layout: ``<root>/<model>/<version>/`` holds the model files (a Hugging Face directory with its ``twt.json``),
a ``README.md`` model card and ``MANIFEST.json`` (sha256 and size of every file, plus ``model``, ``version``,
``created``, ``metrics``, ``gate``, ``lineage``), written last by ``twt.store.publish_dir``: a version without
a manifest does not exist, and listing, ``show`` and ``pull`` ignore it. ``root`` is ``s3://bucket/prefix``,
``file://`` or a local directory.

Names (``twt.names``, whole-string matches): a model is ``[a-z0-9][a-z0-9._-]{0,62}`` without ``..``. A
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

import contextlib
import datetime as dt
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twt import names as name_rules
from twt import store
from twt.config import RegistryConfig, schema_default
from twt.model_card import metric_rows, render_card
from twt.records import read_json
from twt.store import MANIFEST_NAME, Manifest, S3Settings, StoreError

MODEL_NAME = name_rules.MODEL_NAME  # match with fullmatch (name_rules.is_model_name), never re.match
VERSION = name_rules.VERSION
AUTO_ATTEMPTS = 50  # versions an "auto" publish tries when others publish at the same time
STALE_AFTER_S = 6 * 3600  # a claim or staging directory this old is abandoned (TWT_REGISTRY_STALE_AFTER_S)
CARD_NAME = "README.md"
CLAIMS = ".publishing"  # <root>/<model>/.publishing/<version>/ exists while a publish of it runs
KIND = "twt-registry-version"
SKIPPED_DIRS = ("checkpoints",)  # training state, not part of the model (train.py removes it when done)


class RegistryError(StoreError):
    """A registry operation failed; one line naming the model, version or root."""


class RegistryNameError(RegistryError, name_rules.InvalidNameError):
    """A model name, version or reference that the registry does not accept."""


class VersionExistsError(RegistryError, store.AlreadyPublishedError):
    """The version is published (or being published); versions are immutable."""


class VersionNotFoundError(RegistryError, store.NotFoundError):
    """No such published version (a version without a manifest does not exist)."""


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


def check_model_name(name: str) -> str:
    return name_rules.check_model_name(name, RegistryNameError)


def check_version(version: str) -> str:
    return name_rules.check_version(version, RegistryNameError)


def version_key(version: str) -> tuple[int, ...]:
    """Numeric sort key: ``1`` < ``1.0`` < ``1.2`` < ``1.10`` < ``2``."""
    return tuple(int(part) for part in version.split("."))


def parse_ref(ref: str) -> tuple[str, str]:
    """``"name@version"`` or ``"name@latest"`` → (name, version); both parts validated."""
    name, sep, version = ref.partition("@") if isinstance(ref, str) else ("", "", "")
    if not sep or not name or not version or "@" in version:
        raise RegistryNameError(f"invalid model reference {ref!r}: expected NAME@VERSION or NAME@latest")
    check_model_name(name)
    return name, version if version == "latest" else check_version(version)


# ---- layout ---------------------------------------------------------------------------------------------


def version_uri(root: store.PathLike, model: str, version: str) -> str:
    return store.parse_uri(root).child(f"{check_model_name(model)}/{check_version(version)}").uri


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


def _listdir(path: Path) -> list[Path]:
    """The entries of a directory, sorted; none when it does not exist (another process may remove an
    empty ``.publishing/`` at any moment)."""
    try:
        return sorted(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _claimed(root: store.PathLike, model: str, settings: S3Settings | None) -> list[str]:
    """Versions of ``model`` with a claim (a publish running, or a killed one's leftover)."""
    base = store.parse_uri(root).child(f"{model}/{CLAIMS}")
    if base.scheme == "file":
        found = _listdir(Path(base.key))
        return [p.name for p in found if name_rules.is_version(p.name) and (p / MANIFEST_NAME).is_file()]
    prefix = base.child("").uri
    rels = [u[len(prefix) :].split("/") for u in store.list_uris(prefix, settings=settings)]
    return [r[0] for r in rels if len(r) == 2 and r[1] == MANIFEST_NAME and name_rules.is_version(r[0])]


def _next_version(root: store.PathLike, model: str, after: int, settings: S3Settings | None) -> str:
    taken = [*(v for _, v in _published(root, model, settings)), *_claimed(root, model, settings)]
    return str(max([after, *(version_key(v)[0] for v in taken)]) + 1)


# ---- claims and leftovers ----------------------------------------------------------------------------------


def stale_after_s() -> float:
    """Age after which a claim or staging directory counts as abandoned: ``TWT_REGISTRY_STALE_AFTER_S``,
    default ``STALE_AFTER_S`` (6 hours). A leftover whose owner process is gone (same host) is stale at
    once."""
    raw = os.environ.get("TWT_REGISTRY_STALE_AFTER_S", "")
    try:
        value = float(raw) if raw.strip() else STALE_AFTER_S
    except ValueError:
        raise RegistryError(f"TWT_REGISTRY_STALE_AFTER_S={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise RegistryError(f"TWT_REGISTRY_STALE_AFTER_S={raw!r} must be a finite number >= 0")
    return value


@dataclass(frozen=True)
class Claim:
    """Who holds ``uri`` (a claim directory) and since when."""

    uri: str
    host: str
    pid: int
    id: str
    started: float  # epoch seconds

    @classmethod
    def read(cls, uri: str, settings: S3Settings | None) -> Claim | None:
        """The claim at ``uri``; None when there is none. A claim we cannot parse has an unknown owner."""
        try:
            manifest = store.read_manifest(uri, settings=settings)
        except store.NotFoundError:
            return None
        except StoreError:
            return cls(uri, "?", 0, "?", 0.0)
        who = manifest.metadata.get("publisher")
        who = who if isinstance(who, Mapping) else {}
        try:
            started = dt.datetime.fromisoformat(str(manifest.created)).timestamp()
        except ValueError:
            started = 0.0
        pid = who.get("pid")
        pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else 0
        return cls(uri, str(who.get("host", "?")), pid, str(who.get("id", "?")), started)

    @property
    def owner(self) -> str:
        return f"process {self.pid} on {self.host}"

    def stale(self, max_age_s: float, now: float | None = None) -> str | None:
        """Why this claim is abandoned (its owner is gone, or it is too old), or None while it may be live."""
        if store.owner_alive(self.pid, self.host) is False:
            return f"its owner, {self.owner}, is gone"
        age = (time.time() if now is None else now) - self.started
        if age > max_age_s:
            return f"it is {age:.0f} s old (older than {max_age_s:.0f} s)"
        return None


def _claim_uri(root: store.PathLike, model: str, version: str) -> str:
    return store.parse_uri(root).child(f"{model}/{CLAIMS}/{version}").uri


def _publish_empty(uri: str, meta: dict, settings: S3Settings | None) -> None:
    with tempfile.TemporaryDirectory(prefix="twt-claim-") as empty:
        store.publish_dir(empty, uri, metadata=meta, settings=settings)


def _publisher() -> dict[str, Any]:
    return {"host": store.this_host(), "pid": os.getpid(), "id": uuid.uuid4().hex}


def _reclaim(
    root: store.PathLike, model: str, version: str, claim: Claim, settings: S3Settings | None
) -> list[str]:
    """Remove an abandoned claim and what its publish left under ``<model>/<version>/``; returns the URIs.

    Of several processes reclaiming the same claim one does it: each first publishes a reclaim lock named
    after the claim's id (exclusive, like a claim); the others get ``VersionExistsError``. While the old
    claim exists nobody else can publish the version, so the files under it are the dead publisher's."""
    lock = f"{claim.uri}.reclaim-{claim.id}" if name_rules.is_model_name(claim.id) else f"{claim.uri}.reclaim"
    try:
        _publish_empty(lock, {"publisher": _publisher()}, settings)
    except store.AlreadyPublishedError:
        raise VersionExistsError(
            f"{model}@{version}: another process is removing the abandoned claim {claim.uri}"
        ) from None
    removed = []
    try:
        current = Claim.read(claim.uri, settings)
        if current is not None and current.id == claim.id:
            target = store.parse_uri(version_uri(root, model, version)).child("")
            unpublished = not store.exists(target.uri, settings=settings)
            if unpublished and target.scheme == "s3" and store.list_uris(target.uri, settings=settings):
                store.delete(target.uri, settings=settings)  # half-uploaded files of the dead publish
                removed.append(target.uri)
            store.delete(claim.uri, settings=settings)
            removed.append(claim.uri)
    finally:
        store.delete(lock, settings=settings)
    return removed


def _claim(root: store.PathLike, model: str, version: str, settings: S3Settings | None) -> str:
    """Publish the empty claim directory for ``model@version``; exactly one concurrent caller succeeds.

    A claim left by a publish that was killed (its owner gone, or older than ``stale_after_s()``) is
    reclaimed once; a live one is reported with its owner."""
    claim = _claim_uri(root, model, version)
    for attempt in (1, 2):
        try:
            _publish_empty(claim, {"publisher": _publisher()}, settings)
            return claim
        except store.AlreadyPublishedError:
            held = Claim.read(claim, settings)
            why = held.stale(stale_after_s()) if held is not None else "it is gone"
            if why is None or attempt == 2:
                owner = held.owner if held is not None else "another process"
                raise VersionExistsError(
                    f"{model}@{version} is being published by another process (claim {claim}, held by "
                    f"{owner}; if no publish is running, one was killed: `twt registry gc --root "
                    f"{store.parse_uri(root).uri}` removes it, and a publish reclaims it after "
                    f"{stale_after_s():.0f} s)"
                ) from None
            if held is not None:
                _reclaim(root, model, version, held, settings)
    raise AssertionError("unreachable")  # pragma: no cover


def _release(claim: str, settings: S3Settings | None) -> str:
    """Remove our own claim; returns '' or a note for an error message when it stays behind."""
    try:
        store.delete(claim, settings=settings)
    except StoreError:
        return f"; the claim {claim} is left behind: `twt registry gc` removes it"
    if store.parse_uri(claim).scheme == "file":
        with contextlib.suppress(OSError):
            Path(store.parse_uri(claim).key).parent.rmdir()  # <model>/.publishing/, when empty
    return ""


@dataclass(frozen=True)
class Leftover:
    """Something a killed publish left in the registry, and why it may go."""

    uri: str
    kind: str  # "claim", "staging" (a local half-copied directory) or "upload" (S3 objects, no manifest)
    reason: str


def _local_leftovers(model_dir: Path, max_age_s: float, now: float) -> list[Leftover]:
    found = []
    for folder in (model_dir, model_dir / CLAIMS):
        for path in _listdir(folder):
            parsed = store.parse_staging(path.name)
            if parsed is None or not path.is_dir():
                continue
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue  # its owner just renamed it into place
            if store.owner_alive(parsed[1], parsed[2]) is False:
                found.append(Leftover(str(path), "staging", f"its owner, process {parsed[1]}, is gone"))
            elif age > max_age_s:
                found.append(Leftover(str(path), "staging", f"it is {age:.0f} s old"))
    return found


def _s3_uploads(
    root: store.PathLike, model: str, claimed: set[str], max_age_s: float, settings: S3Settings | None
) -> list[Leftover]:
    """Objects under ``<model>/<version>/`` without a manifest or a claim, all older than ``max_age_s``."""
    base = store.parse_uri(root).child(f"{model}/").uri
    versions: dict[str, list[float]] = {}
    for uri, modified in store.list_modified(base, settings=settings):
        parts = uri[len(base) :].split("/")
        if len(parts) >= 2 and name_rules.is_version(parts[0]):
            versions.setdefault(parts[0], []).append(modified)
    now, found = time.time(), []
    for version, times in sorted(versions.items()):
        if version in claimed or store.exists(version_uri(root, model, version), settings=settings):
            continue
        if now - max(times) > max_age_s:
            reason = f"{len(times)} object(s) without a manifest, the newest {now - max(times):.0f} s old"
            found.append(Leftover(version_uri(root, model, version), "upload", reason))
    return found


def gc(
    root: store.PathLike,
    model: str | None = None,
    *,
    older_than_s: float | None = None,
    dry_run: bool = False,
    settings: S3Settings | None = None,
) -> list[Leftover]:
    """Remove what killed publishes left: claims and staging whose owner is gone (same host) or that are
    older than ``older_than_s`` (default ``stale_after_s()``), and, on S3, uploads without a manifest or a
    claim that old. Returns what was (``dry_run``: would be) removed. Live publishes are never touched."""
    max_age = stale_after_s() if older_than_s is None else older_than_s
    loc, now = store.parse_uri(root), time.time()
    models = [check_model_name(model)] if model else _model_dirs(root, settings)
    out: list[Leftover] = []
    for name in models:
        claims_base = loc.child(f"{name}/{CLAIMS}")
        if loc.scheme == "file":
            out += _local_leftovers(Path(loc.child(name).key), max_age, now)
            entries = [p.name for p in _listdir(Path(claims_base.key)) if (p / MANIFEST_NAME).is_file()]
        else:
            prefix = claims_base.child("").uri
            rels = [u[len(prefix) :].split("/") for u in store.list_uris(prefix, settings=settings)]
            entries = sorted({r[0] for r in rels if len(r) == 2 and r[1] == MANIFEST_NAME})
        live = set()
        for entry in entries:
            claim = Claim.read(claims_base.child(entry).uri, settings)
            why = claim.stale(max_age, now) if claim is not None else None
            if claim is None:
                continue
            if why is None:
                live.add(entry)
                continue
            out.append(Leftover(claim.uri, "claim", why))
            if not dry_run and name_rules.is_version(entry):
                with contextlib.suppress(VersionExistsError):
                    _reclaim(root, name, entry, claim, settings)
            elif not dry_run:
                store.delete(claim.uri, settings=settings)  # a reclaim lock left by a killed reclaim
        if loc.scheme == "file" and not dry_run:
            out += _tidy_local_claims(Path(claims_base.key))
        if loc.scheme == "s3":
            out += _s3_uploads(
                root, name, live | {e for e in entries if name_rules.is_version(e)}, max_age, settings
            )
    if not dry_run:
        for item in out:
            if item.kind != "claim":
                store.delete(
                    store.parse_uri(item.uri).child("").uri if item.kind == "upload" else item.uri,
                    settings=settings,
                )
    return out


def _tidy_local_claims(claims: Path) -> list[Leftover]:
    """Remove empty claim directories (a release cut short between its two steps) and then ``claims``
    itself when empty. Claims arrive by renaming a full directory, so an empty one is nobody's."""
    removed = []
    for path in _listdir(claims):
        if path.is_dir() and store.parse_staging(path.name) is None and not (path / MANIFEST_NAME).exists():
            with contextlib.suppress(OSError):
                path.rmdir()
                removed.append(Leftover(str(path), "claim", "empty: its release was interrupted"))
    with contextlib.suppress(OSError):
        claims.rmdir()
    return removed


def _model_dirs(root: store.PathLike, settings: S3Settings | None) -> list[str]:
    """Every model folder under ``root``, published or not (a killed first publish has no version yet)."""
    loc = store.parse_uri(root)
    if loc.scheme == "file":
        base = Path(loc.key)
        return (
            sorted(p.name for p in _listdir(base) if p.is_dir() and name_rules.is_model_name(p.name))
            if base.is_dir()
            else []
        )
    prefix = loc.child("").uri
    firsts = {u[len(prefix) :].split("/")[0] for u in store.list_uris(prefix, settings=settings)}
    return sorted(n for n in firsts if name_rules.is_model_name(n))


def publish_claimed(
    stage: Path, root: store.PathLike, name: str, version: str, meta: dict, settings: S3Settings | None
) -> Manifest:
    """Publish the directory ``stage`` as ``<root>/<name>/<version>`` while holding that version's claim.

    Of two concurrent publishers exactly one gets the claim; the other fails with ``VersionExistsError``
    before writing a byte. The claim is released whatever happens; a failure to release it is added to
    the error (after success a claim left behind is harmless: the manifest decides).
    """
    uri = version_uri(root, name, version)
    claim = _claim(root, name, version, settings)
    try:
        try:  # checks for a manifest before uploading anything
            manifest = store.publish_dir(stage, uri, metadata=meta, settings=settings)
        except store.AlreadyPublishedError as err:
            raise VersionExistsError(f"{name}@{version} already exists at {uri}: {err}") from err
    except BaseException as err:
        if (note := _release(claim, settings)) and isinstance(err, StoreError):
            raise type(err)(f"{err}{note}") from err
        raise
    _release(claim, settings)
    return manifest


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

    ``metrics``: evaluated model name → numbers (``twt.evaluate``'s format, see ``metric_rows``). ``gate``:
    the verdict (a ``twt.gate.Verdict`` or its dict). ``lineage`` defaults to ``model_dir/twt.json``.
    ``tags``: labels recorded in the manifest.
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
        gate = gate.to_dict()  # a twt.gate.Verdict
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
