"""Artifacts by URI: local paths, ``file://`` and ``s3://bucket/key`` behind one small interface.

Every file that goes up gets its sha256 recorded (S3 object metadata ``x-amz-meta-sha256``); every file that
comes down is checked against it in a temporary file that is renamed into place only when it matches. A
directory is *published* when its ``MANIFEST.json`` (relative path → sha256 and size, plus caller metadata)
exists; the manifest is written last, so a reader sees all of a directory or none of it.

    put_file("metrics.json", "s3://twt/runs/42/metrics.json")        # sha256 stored with the object
    get_file("s3://twt/runs/42/metrics.json", "work/metrics.json")   # verified, then renamed into place
    publish_dir("out/student", "s3://twt/registry/student/3", metadata={"lineage": {...}})
    get_dir("s3://twt/registry/student/3", "work/student")           # needs the manifest; checks every file

s3:// URIs take the server from the environment (how Kubernetes secrets arrive): ``TWT_S3_ENDPOINT``
(host:port, or http(s)://host:port and TLS follows the scheme), ``TWT_S3_ACCESS_KEY``/``TWT_S3_SECRET_KEY``
(or ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), ``TWT_S3_SECURE`` (default true), ``TWT_S3_REGION``.
Connection errors, 5xx and SlowDown are retried with exponential backoff, then ``UnreachableError`` names
the endpoint and the URI.

Concurrency: the manifest is written with ``If-None-Match: *`` (honoured by AWS S3, MinIO and moto), so of
two publishers of one version exactly one wins and the other gets ``AlreadyPublishedError``. Servers that
ignore the header let the last one win. Both upload their files under the same prefix before that, so a
loser with *different* bytes may overwrite a winner's file; readers verify every file against the manifest
and then get ``ChecksumError``, never wrong bytes.
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

MANIFEST_NAME = "MANIFEST.json"
MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's smallest multipart part (all parts but the last)
_RETRY_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}
_NET_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EPIPE, errno.ETIMEDOUT}
_TRANSIENT = (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)
T = TypeVar("T")
PathLike = str | os.PathLike


class StoreError(Exception):
    """A store operation failed; the message is one line naming the URI."""


class NotFoundError(StoreError):
    """No such file, object, bucket or published directory."""


class ChecksumError(StoreError):
    """Bytes whose sha256 differs from the recorded or the expected one."""


class AlreadyPublishedError(StoreError):
    """The destination already has a manifest; published versions are immutable."""


class UnreachableError(StoreError):
    """The S3 endpoint kept failing (connection errors, 5xx) through every attempt."""


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 server is and how hard to try. ``from_env()`` fills the first five fields."""

    endpoint: str  # host:port, no scheme (TWT_S3_ENDPOINT)
    access_key: str = field(repr=False)  # TWT_S3_ACCESS_KEY, else AWS_ACCESS_KEY_ID
    secret_key: str = field(repr=False)  # TWT_S3_SECRET_KEY, else AWS_SECRET_ACCESS_KEY
    secure: bool = True  # TLS; TWT_S3_SECURE, or the scheme of a URL in TWT_S3_ENDPOINT
    region: str | None = None  # TWT_S3_REGION; None lets the client ask the server
    part_size: int = 16 * MiB  # files larger than this go up in parts of this size (>= 5 MiB)
    attempts: int = 4  # tries per operation, the first included
    backoff_s: float = 0.2  # sleep before retry n is backoff_s * 2**(n-1): 0.2, 0.4, 0.8 s
    connect_timeout_s: float = 5.0  # a dead host fails after this instead of hanging
    read_timeout_s: float = 60.0  # longest silence while waiting for or streaming a response

    def __post_init__(self) -> None:
        if self.part_size < MIN_PART_SIZE:
            raise StoreError(f"part_size {self.part_size} is below S3's minimum of {MIN_PART_SIZE} (5 MiB)")
        if self.attempts < 1:
            raise StoreError(f"attempts must be at least 1, got {self.attempts}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """Settings from the ``TWT_S3_*`` variables (``env`` defaults to ``os.environ``)."""
        env = os.environ if env is None else env
        endpoint = env.get("TWT_S3_ENDPOINT", "").strip().rstrip("/")
        if not endpoint:
            raise StoreError("TWT_S3_ENDPOINT is not set; s3:// URIs need it (host:port or http://host:port)")
        flag = env.get("TWT_S3_SECURE", "").strip().lower()
        if flag not in ("", "true", "false", "1", "0", "yes", "no"):
            raise StoreError(f"TWT_S3_SECURE={flag!r} is not true or false")
        secure = None if not flag else flag in ("true", "1", "yes")
        if "://" in endpoint:
            url = urllib.parse.urlsplit(endpoint)
            if url.scheme not in ("http", "https") or not url.netloc or url.path:
                raise StoreError(f"TWT_S3_ENDPOINT={endpoint!r} is neither host:port nor http(s)://host:port")
            if secure is not None and secure != (url.scheme == "https"):
                raise StoreError(f"TWT_S3_SECURE={flag!r} contradicts TWT_S3_ENDPOINT={endpoint!r}")
            endpoint, secure = url.netloc, url.scheme == "https"
        keys = []
        for ours, aws, secret_key in [
            ("TWT_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "accesskey"),
            ("TWT_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "secretkey"),
        ]:
            keys.append(env.get(ours) or env.get(aws))
            if not keys[-1]:
                raise StoreError(
                    f"{ours} is not set (nor {aws}); s3:// URIs need credentials (in the pipeline: key "
                    f"{secret_key!r} of the Secret named by the minio_secret parameter)"
                )
        region = env.get("TWT_S3_REGION") or None
        return cls(endpoint, keys[0], keys[1], secure=secure is not False, region=region)


@dataclass(frozen=True)
class Location:
    """A parsed URI: a local path (``scheme == "file"``, ``key`` is the path) or an object key in a bucket."""

    scheme: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.scheme == "s3" else self.key

    def child(self, rel: str) -> Location:
        """The location of ``rel`` (a relative POSIX path) inside this one."""
        if self.scheme == "file":
            return Location("file", "", os.path.join(self.key, rel))
        base = self.key.rstrip("/")
        return Location("s3", self.bucket, f"{base}/{rel}" if base else rel)


def parse_uri(uri: PathLike) -> Location:
    """Parse a local path, ``file:///path`` or ``s3://bucket/key``; anything else is a ``StoreError``."""
    text = os.fspath(uri)
    scheme, sep, rest = text.partition("://")
    if not text or not sep:
        if not text:
            raise StoreError("empty path or URI")
        return Location("file", "", text)
    if scheme == "file":
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise StoreError(f"file URI with a remote host is not supported: {text}")
        return Location("file", "", urllib.parse.unquote("/" + path))
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise StoreError(f"no bucket in {text!r}: expected s3://bucket/key")
        return Location("s3", bucket, key.lstrip("/"))
    raise StoreError(f"unsupported URI scheme {scheme!r} in {text!r}: use a local path, file:// or s3://")


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a published directory holds: relative path → sha256 and size, plus caller metadata."""

    files: dict[str, FileEntry]
    metadata: dict[str, Any] = field(default_factory=dict)  # lineage, metrics, ... (JSON values)
    created: str = ""  # UTC ISO-8601 time of publishing

    def to_json(self) -> str:
        files = {rel: {"sha256": e.sha256, "size": e.size} for rel, e in sorted(self.files.items())}
        body = {"format": 1, "created": self.created, "files": files, "metadata": self.metadata}
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, uri: str) -> Manifest:
        """Parse and check a manifest: every entry a normalised relative POSIX path (see ``check_entry``),
        listed once, with a 64-hex sha256 and a non-negative integer size; else one-line ``StoreError``."""
        try:
            raw = json.loads(text, object_pairs_hook=_unique_keys)
            if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict):
                raise ValueError("no 'files' mapping")
            files = {check_entry(rel): _file_entry(rel, e) for rel, e in raw["files"].items()}
            _check_no_nesting(files)
            return cls(files, dict(raw.get("metadata") or {}), str(raw.get("created", "")))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
            raise StoreError(f"malformed manifest {uri}: {err}") from None


SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"entry {key!r} is listed twice")
        seen[key] = value
    return seen


def check_entry(rel: object) -> str:
    """A manifest entry must be a normalised relative POSIX path inside the directory: not empty, not ``.``
    or ``..``, no ``..`` part, not absolute, no NUL, backslash, empty or ``.`` part, not the manifest
    itself."""
    if not isinstance(rel, str) or not rel:
        raise ValueError(f"entry {rel!r} is not a file path")
    parts = rel.split("/")
    bad = (
        "\0" in rel
        or "\\" in rel
        or rel.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or rel == MANIFEST_NAME
    )
    if bad or PurePosixPath(rel).as_posix() != rel:
        raise ValueError(f"entry {rel!r} is not a normalised relative path inside the directory")
    return rel


def _file_entry(rel: str, entry: Any) -> FileEntry:
    if not isinstance(entry, dict):
        raise ValueError(f"entry {rel!r}: expected {{sha256, size}}")
    digest, size = entry.get("sha256"), entry.get("size")
    if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
        raise ValueError(f"entry {rel!r}: sha256 {digest!r} is not 64 lower-case hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"entry {rel!r}: size {size!r} is not a non-negative integer")
    return FileEntry(digest, size)


def _check_no_nesting(files: Mapping[str, FileEntry]) -> None:
    """``a`` and ``a/b`` cannot both be files."""
    dirs = {"/".join(rel.split("/")[:i]) for rel in files for i in range(1, rel.count("/") + 1)}
    if clash := sorted(dirs & files.keys()):
        raise ValueError(f"entry {clash[0]!r} is both a file and a directory")


def _chunks(path: PathLike) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            yield chunk


def sha256_file(path: PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    for chunk in _chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def _check_digest(uri: str, expected: str | None, actual: str, what: str = "expected") -> None:
    if expected and expected.lower() != actual:
        raise ChecksumError(f"checksum mismatch for {uri}: {what} sha256 {expected}, got {actual}")


def _write_verified(dst: Path, uri: str, expected: str | None, fill: Callable[[Path], tuple]) -> str:
    """Write ``dst`` through a temporary file beside it: ``fill(tmp)`` returns (sha256, recorded sha256 or
    None); both digests are checked before the rename, so a mismatch leaves nothing at ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        actual, recorded = fill(tmp)
        _check_digest(uri, recorded, actual, "recorded")
        _check_digest(uri, expected, actual)
        os.chmod(tmp, 0o644)  # mkstemp made it 0600
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return actual


def _save(chunks: Iterator[bytes], path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:  # "wb" also truncates what a failed attempt left
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _copy_verified(src: Path, dst: Path, expected: str | None, uri: str) -> str:
    return _write_verified(dst, uri, expected, lambda tmp: (_save(_chunks(src), tmp), None))


# ---- S3: one client per settings, every request retried the same way -----------------------------------


@functools.lru_cache(maxsize=8)
def _client(settings: S3Settings) -> Minio:
    # The SDK's own pool retries 5 times with 5-minute timeouts; ours fails fast and _call retries.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s),
        retries=urllib3.Retry(total=0, redirect=False),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        secure=settings.secure,
        region=settings.region,
        http_client=http,
    )


def _is_transient(err: BaseException) -> bool:
    if isinstance(err, _TRANSIENT):
        return True
    if isinstance(err, OSError):
        return err.errno in _NET_ERRNOS
    if isinstance(err, S3Error):
        return err.code in _RETRY_CODES or (getattr(err.response, "status", 0) or 0) >= 500
    if isinstance(err, ServerError):
        return err.status_code >= 500
    return isinstance(err, InvalidResponseError) and (getattr(err, "_code", 0) or 0) >= 500  # proxy 502 page


def _reason(err: BaseException | None) -> str:
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    text = f"{err.code}: {err.message}" if isinstance(err, S3Error) else f"{type(err).__name__}: {err}"
    line = text.splitlines()[0]
    return line if len(line) <= 200 else line[:197] + "..."


def _as_store_error(err: Exception, loc: Location, settings: S3Settings) -> StoreError | None:
    code = err.code if isinstance(err, S3Error) else None
    if code in ("NoSuchKey", "ResourceNotFound"):
        return NotFoundError(f"no such object: {loc.uri}")
    if code == "NoSuchBucket":
        return NotFoundError(f"no such bucket {loc.bucket!r} at {settings.endpoint} (for {loc.uri})")
    if code == "PreconditionFailed":
        return AlreadyPublishedError(f"{loc.uri} already exists")
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return StoreError(f"access denied to {loc.uri} at {settings.endpoint} ({code}); check TWT_S3_*_KEY")
    if isinstance(err, MinioException):
        return StoreError(f"S3 request for {loc.uri} at {settings.endpoint} failed: {_reason(err)}")
    if isinstance(err, ValueError):  # the SDK checks bucket and object names with ValueError
        return StoreError(f"invalid S3 location {loc.uri}: {err}")
    return None


def _call(settings: S3Settings, loc: Location, fn: Callable[[], T]) -> T:
    """Run one S3 request; retry connection errors and 5xx with exponential backoff, then fail clearly."""
    last: BaseException | None = None
    for attempt in range(1, settings.attempts + 1):
        try:
            return fn()
        except StoreError:
            raise
        except Exception as err:
            if not _is_transient(err):
                converted = _as_store_error(err, loc, settings)
                if converted is None:
                    raise
                raise converted from err
            last = err
            if attempt < settings.attempts:
                time.sleep(settings.backoff_s * 2 ** (attempt - 1))
    raise UnreachableError(
        f"cannot reach S3 endpoint {settings.endpoint} for {loc.uri} "
        f"after {settings.attempts} attempts: {_reason(last)}"
    ) from last


def _upload_file(settings: S3Settings, loc: Location, path: Path, digest: str) -> None:
    """Upload one file (multipart above ``part_size``) with its sha256 as object metadata."""
    client = _client(settings)
    put = functools.partial(client.fput_object, metadata={"sha256": digest}, part_size=settings.part_size)
    _call(settings, loc, lambda: put(loc.bucket, loc.key, str(path)))


def _fetch(
    settings: S3Settings, loc: Location, consume: Callable[[Iterator[bytes]], T]
) -> tuple[T, str | None]:
    """GET an object (retried) and hand its body to ``consume``; returns that and the recorded sha256."""

    def attempt() -> tuple[T, str | None]:
        response = _client(settings).get_object(loc.bucket, loc.key)
        try:
            return consume(response.stream(MiB)), response.headers.get("x-amz-meta-sha256")
        finally:
            response.close()
            response.release_conn()

    return _call(settings, loc, attempt)


def _download(settings: S3Settings, loc: Location, dst: Path, expected: str | None) -> str:
    return _write_verified(dst, loc.uri, expected, lambda tmp: _fetch(settings, loc, lambda c: _save(c, tmp)))


def _read_text(settings: S3Settings, loc: Location) -> str:
    data, recorded = _fetch(settings, loc, b"".join)
    _check_digest(loc.uri, recorded, hashlib.sha256(data).hexdigest(), "recorded")
    return data.decode()


def _s3_exists(settings: S3Settings, loc: Location) -> bool:
    try:
        _call(settings, loc, lambda: _client(settings).stat_object(loc.bucket, loc.key))
    except NotFoundError:
        return False
    return True


def _put_manifest(settings: S3Settings, loc: Location, text: str, exclusive: bool) -> None:
    """Write the manifest; ``exclusive`` adds ``If-None-Match: *`` so that exactly one publisher wins."""
    body = text.encode()
    headers = {"Content-Type": "application/json", "x-amz-meta-sha256": hashlib.sha256(body).hexdigest()}
    if exclusive:
        headers["If-None-Match"] = "*"
    client = _client(settings)
    try:  # the public put_object turns unknown headers into x-amz-meta-*; _put_object sends them as given
        _call(settings, loc, lambda: client._put_object(loc.bucket, loc.key, body, headers=dict(headers)))
    except AlreadyPublishedError as err:
        # An earlier attempt of ours may have landed before its response was lost: then the manifest is ours.
        if _read_text(settings, loc) != text:
            raise AlreadyPublishedError(f"{loc.uri} was published by someone else meanwhile") from err


STAGING_SUFFIX = ".tmp"  # hidden staging directories: .<name>.<pid>@<host>.<random>.tmp beside the target
_STAGING = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9-]*)\.[A-Za-z0-9_]+\.tmp")


def this_host() -> str:
    """The host name as it appears in staging names (letters, digits and '-')."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def owner_tag() -> str:
    """``<pid>@<host>``: who owns a staging directory, so that a leftover can be traced to a dead process."""
    return f"{os.getpid()}@{this_host()}"


def owner_alive(pid: int, host: str) -> bool | None:
    """Whether process ``pid`` on ``host`` runs: True/False on this host, None (unknown) elsewhere."""
    if host != this_host():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parse_staging(name: str) -> tuple[str, int, str] | None:
    """(target name, pid, host) of a staging directory's name, or None when it is not one."""
    match = _STAGING.fullmatch(name)
    return (match["name"], int(match["pid"]), match["host"]) if match else None


def _mkdtemp_beside(dst: Path) -> Path:
    """A new hidden staging directory next to ``dst``, named after its owner (see ``parse_staging``).

    The parent is created if needed; another process may remove an empty parent between that and the
    ``mkdtemp`` (claims do), so that is retried."""
    for attempt in range(8):
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            return Path(
                tempfile.mkdtemp(prefix=f".{dst.name}.{owner_tag()}.", suffix=STAGING_SUFFIX, dir=dst.parent)
            )
        except (FileNotFoundError, FileExistsError):  # the parent went, or came and went, meanwhile
            if attempt == 7:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _settings(settings: S3Settings | None) -> S3Settings:
    return settings if settings is not None else S3Settings.from_env()


def is_new_dir(path: Path) -> bool:
    """True for a path that does not exist or is an empty directory (another process may remove it while
    we look: then it is new)."""
    try:
        return not path.exists() or (path.is_dir() and not any(path.iterdir()))
    except FileNotFoundError:
        return True


# ---- public API -----------------------------------------------------------------------------------------


def put_file(
    src: PathLike, uri: PathLike, *, sha256: str | None = None, settings: S3Settings | None = None
) -> str:
    """Copy or upload one local file to ``uri``; returns its sha256 (which must equal ``sha256`` if given)."""
    src_path, loc = Path(src), parse_uri(uri)
    if not src_path.is_file():
        raise NotFoundError(f"no such file: {src_path}")
    if loc.scheme == "file":
        return _copy_verified(src_path, Path(loc.key), sha256, loc.uri)
    digest = sha256_file(src_path)
    _check_digest(f"{src_path} (for {loc.uri})", sha256, digest)
    _upload_file(_settings(settings), loc, src_path, digest)
    return digest


def get_file(
    uri: PathLike, dst: PathLike, *, sha256: str | None = None, settings: S3Settings | None = None
) -> str:
    """Copy or download ``uri`` to ``dst``, verified against the recorded and the given sha256; returns it."""
    loc = parse_uri(uri)
    if loc.scheme == "s3":
        return _download(_settings(settings), loc, Path(dst), sha256)
    if not Path(loc.key).is_file():
        raise NotFoundError(f"no such file: {loc.uri}")
    return _copy_verified(Path(loc.key), Path(dst), sha256, loc.uri)


def publish_dir(
    src: PathLike,
    uri: PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    settings: S3Settings | None = None,
) -> Manifest:
    """Publish a directory (recursively) atomically: readers see all of it or nothing.

    Files go first, ``MANIFEST.json`` last. A destination that has a manifest is refused with
    ``AlreadyPublishedError`` unless ``overwrite`` (then it is unpublished first, so readers see nothing
    rather than a mix). Locally the copy is built in a hidden sibling directory and renamed into place.
    A failed S3 publish writes no manifest and removes what it uploaded if the server lets it.
    A top-level ``MANIFEST.json`` in ``src`` is replaced; empty directories are not kept.
    """
    src_path, loc = Path(src), parse_uri(uri)
    if not src_path.is_dir():
        raise NotFoundError(f"no such directory: {src_path}")
    files = sorted((p.relative_to(src_path).as_posix(), p) for p in src_path.rglob("*") if p.is_file())
    files = [(rel, p) for rel, p in files if rel != MANIFEST_NAME]
    for rel, _ in files:
        try:
            check_entry(rel)
        except ValueError as err:
            raise StoreError(f"cannot publish {src_path}: {err}") from None
    entries = {rel: FileEntry(sha256_file(p), p.stat().st_size) for rel, p in files}
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
    manifest = Manifest(entries, dict(metadata or {}), created)
    try:
        text = manifest.to_json()
    except (TypeError, ValueError) as err:
        raise StoreError(f"metadata for {loc.uri} is not JSON: {err}") from err
    if loc.scheme == "s3":
        _publish_s3(files, manifest, text, loc, overwrite, _settings(settings))
        return manifest
    dst = Path(loc.key)
    if not overwrite:
        _check_free(dst)
    tmp = _mkdtemp_beside(dst)
    try:
        for rel, path in files:  # the copy must still match the hash in the manifest
            _copy_verified(path, tmp / rel, entries[rel].sha256, str(path))
        (tmp / MANIFEST_NAME).write_text(text)
        os.chmod(tmp, 0o755)  # mkdtemp made it 0700
        if overwrite and dst.is_dir():
            shutil.rmtree(dst)  # not atomic: until the rename a reader sees nothing (never a mix)
        try:
            os.rename(tmp, dst)  # atomic; fails if another publisher's non-empty directory got there first
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise AlreadyPublishedError(f"{dst} was published by someone else meanwhile") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_free(dst: Path) -> None:
    """``dst`` must be new or an empty directory (KFP pre-creates outputs); a published one is
    ``AlreadyPublishedError``. One that is unpublished between two looks (a claim released) is looked at
    again."""
    for _ in range(3):
        if is_new_dir(dst):
            return
        if (dst / MANIFEST_NAME).is_file():
            raise AlreadyPublishedError(f"{dst} is already published ({MANIFEST_NAME} exists)")
    raise StoreError(f"{dst} exists and is not an empty directory; refusing to publish over it")


def put_dir(
    src: PathLike,
    uri: PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    settings: S3Settings | None = None,
) -> Manifest:
    """Copy or upload a directory with its manifest, replacing what is there (``publish_dir``, overwrite)."""
    return publish_dir(src, uri, metadata=metadata, overwrite=True, settings=settings)


def _publish_s3(
    files: list[tuple[str, Path]],
    manifest: Manifest,
    text: str,
    loc: Location,
    overwrite: bool,
    s3: S3Settings,
) -> None:
    manifest_loc = loc.child(MANIFEST_NAME)
    if _s3_exists(s3, manifest_loc):
        if not overwrite:
            raise AlreadyPublishedError(f"{loc.uri} is already published ({MANIFEST_NAME} exists)")
        _call(s3, manifest_loc, lambda: _client(s3).remove_object(loc.bucket, manifest_loc.key))
    uploaded: list[Location] = []
    try:
        for rel, path in files:
            _upload_file(s3, loc.child(rel), path, manifest.files[rel].sha256)
            uploaded.append(loc.child(rel))
        _put_manifest(s3, manifest_loc, text, exclusive=not overwrite)
    except AlreadyPublishedError:
        raise  # another publisher won: the objects under the prefix are its now
    except StoreError as err:
        left = 0
        for done, target in enumerate(uploaded):  # best effort, one try each: the server may be gone
            try:
                _client(s3).remove_object(target.bucket, target.key)
            except Exception:
                left = len(uploaded) - done
                break
        note = (
            f"{left} uploaded object(s) left behind"
            if left
            else f"removed {len(uploaded)} uploaded object(s)"
        )
        raise type(err)(f"publish of {loc.uri} did not happen (no manifest written; {note}): {err}") from err


def read_manifest(uri: PathLike, *, settings: S3Settings | None = None) -> Manifest:
    """The manifest of a published directory; ``NotFoundError`` if ``uri`` is not one."""
    loc = parse_uri(uri)
    manifest_loc = loc.child(MANIFEST_NAME)
    missing = f"{loc.uri} is not a published directory (no {MANIFEST_NAME})"
    if loc.scheme == "file":
        try:  # one read, no look before: the directory may be unpublished at any moment
            text = Path(manifest_loc.key).read_text()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(missing) from None
        return Manifest.from_json(text, manifest_loc.uri)
    try:
        text = _read_text(_settings(settings), manifest_loc)
    except NotFoundError as err:
        raise NotFoundError(missing) from err
    return Manifest.from_json(text, manifest_loc.uri)


def get_dir(uri: PathLike, dst: PathLike, *, settings: S3Settings | None = None) -> Manifest:
    """Fetch a published directory into ``dst`` (new or empty), every file verified against the manifest.

    Files land in a hidden sibling directory renamed to ``dst`` once all of them check out, so a failure
    leaves nothing at ``dst``. The manifest comes along: ``dst`` is itself a published directory.
    """
    loc, dst_path = parse_uri(uri), Path(dst)
    s3 = _settings(settings) if loc.scheme == "s3" else None
    manifest = read_manifest(uri, settings=s3)
    if not is_new_dir(dst_path):
        raise StoreError(f"{dst_path} exists and is not an empty directory; get_dir needs a new or empty one")
    tmp = _mkdtemp_beside(dst_path)
    try:
        for rel, entry in sorted(manifest.files.items()):
            src = loc.child(rel)
            if s3 is not None:
                _download(s3, src, tmp / rel, entry.sha256)
            elif Path(src.key).is_file():
                _copy_verified(Path(src.key), tmp / rel, entry.sha256, src.uri)
            else:
                raise NotFoundError(f"{src.uri} is listed in the manifest of {loc.uri} but missing")
        (tmp / MANIFEST_NAME).write_text(manifest.to_json())
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, dst_path)  # atomic; replaces an empty directory, fails on a filled one
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            raise StoreError(
                f"{dst_path} was filled by another process meanwhile (a concurrent pull?); "
                "nothing of this one was kept"
            ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def exists(uri: PathLike, *, settings: S3Settings | None = None) -> bool:
    """True for an existing file/object, or a published directory (one with a manifest)."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        return Path(loc.key).is_file() or Path(loc.key, MANIFEST_NAME).is_file()
    s3 = _settings(settings)
    is_object = bool(loc.key) and not loc.key.endswith("/") and _s3_exists(s3, loc)
    return is_object or _s3_exists(s3, loc.child(MANIFEST_NAME))


def list_uris(prefix: PathLike, *, settings: S3Settings | None = None) -> list[str]:
    """Every file under ``prefix``, recursive and sorted (S3 semantics: ``runs/4`` matches ``runs/42/x``)."""
    loc = parse_uri(prefix)
    if loc.scheme == "file":
        root = Path(loc.key) if Path(loc.key).is_dir() else Path(loc.key).parent
        found = [str(p) for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
        return sorted(p for p in found if p.startswith(str(Path(loc.key))))
    s3 = _settings(settings)
    listing = functools.partial(_client(s3).list_objects, loc.bucket, loc.key, recursive=True)
    return sorted(f"s3://{loc.bucket}/{o.object_name}" for o in _call(s3, loc, lambda: list(listing())))


def list_modified(prefix: PathLike, *, settings: S3Settings | None = None) -> list[tuple[str, float]]:
    """``list_uris`` with each file's modification time (epoch seconds)."""
    loc = parse_uri(prefix)
    if loc.scheme == "file":
        out = []
        for uri in list_uris(prefix):
            try:
                out.append((uri, Path(uri).stat().st_mtime))
            except FileNotFoundError:
                continue  # removed while we looked
        return out
    s3 = _settings(settings)
    listing = functools.partial(_client(s3).list_objects, loc.bucket, loc.key, recursive=True)
    objects = _call(s3, loc, lambda: list(listing()))
    return sorted(
        (f"s3://{loc.bucket}/{o.object_name}", o.last_modified.timestamp() if o.last_modified else 0.0)
        for o in objects
    )


def delete(uri: PathLike, *, settings: S3Settings | None = None) -> int:
    """Delete a file/object or a directory with everything under it, manifest first (so it stops being
    published before its files go). Returns how many files went."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        path = Path(loc.key)
        if not path.is_dir():
            existed = path.exists()
            path.unlink(missing_ok=True)
            return int(existed)
        # One rename takes the whole directory away (readers see all of it or nothing, and a publisher
        # waiting for the name cannot move in between two steps and lose its files); then it is removed
        # under a staging name, which gc recognises if this process dies meanwhile.
        trash = path.with_name(f".{path.name}.{owner_tag()}.{uuid.uuid4().hex[:8]}{STAGING_SUFFIX}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return 0
        count = sum(1 for p in trash.rglob("*") if p.is_file())
        shutil.rmtree(trash)
        return count
    if not loc.key.strip("/"):
        raise StoreError(f"refusing to delete a whole bucket: {loc.uri}")
    s3 = _settings(settings)
    targets = [parse_uri(u) for u in list_uris(loc.child("").uri, settings=s3)]  # "runs/4/" spares "runs/42"
    targets.sort(key=lambda t: not t.key.endswith(MANIFEST_NAME))
    if not loc.key.endswith("/") and _s3_exists(s3, loc):
        targets.append(loc)
    for target in targets:
        _call(s3, target, functools.partial(_client(s3).remove_object, target.bucket, target.key))
    return len(targets)
