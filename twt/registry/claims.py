"""Names, claims and leftovers shared by the model and pipeline registries: a version is claimed before it is
uploaded, so that of two concurrent publishers exactly one writes it; what a killed publish left is found and
removed (``gc``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twt.core import names as name_rules
from twt.core import store
from twt.core.store import MANIFEST_NAME, Manifest, S3Settings, StoreError

STALE_AFTER_S = 6 * 3600  # a claim or staging directory this old is abandoned (TWT_REGISTRY_STALE_AFTER_S)


CLAIMS = ".publishing"  # <root>/<model>/.publishing/<version>/ exists while a publish of it runs


class RegistryError(StoreError):
    """A registry operation failed; one line naming the model, version or root."""


class RegistryNameError(RegistryError, name_rules.InvalidNameError):
    """A model name, version or reference that the registry does not accept."""


class VersionExistsError(RegistryError, store.AlreadyPublishedError):
    """The version is published (or being published); versions are immutable."""


class VersionNotFoundError(RegistryError, store.NotFoundError):
    """No such published version (a version without a manifest does not exist)."""


def check_model_name(name: str) -> str:
    return name_rules.check_model_name(name, RegistryNameError)


def check_version(version: str) -> str:
    return name_rules.check_version(version, RegistryNameError)


def version_key(version: str) -> tuple[int, ...]:
    """Numeric sort key: ``1`` < ``1.0`` < ``1.2`` < ``1.10`` < ``2``."""
    return tuple(int(part) for part in version.split("."))


def version_uri(root: store.PathLike, model: str, version: str) -> str:
    return store.parse_uri(root).child(f"{check_model_name(model)}/{check_version(version)}").uri


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
