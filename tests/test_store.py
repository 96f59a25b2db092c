"""twt.core.store against local directories and a real S3 HTTP server (moto, in-process, on 127.0.0.1).

.venv/bin/python -m pytest tests/test_store.py -q
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import time
import types
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.error import ServerError
from s3_server import start_server

from twt.core import store
from twt.core.store import (
    AlreadyPublishedError,
    ChecksumError,
    NotFoundError,
    S3Settings,
    StoreError,
    UnreachableError,
)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record the store's backoff sleeps instead of sleeping (urllib3 and moto keep the real time.sleep)."""
    recorded: list[float] = []
    monkeypatch.setattr(store, "time", types.SimpleNamespace(sleep=recorded.append, monotonic=time.monotonic))
    return recorded


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"a": 1}\n',
        "weights/model.safetensors": bytes(range(256)) * 40,
        "a/b/c.txt": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- URIs and settings ----------------------------------------------------------------------------------


def test_parse_uri_forms_and_bad_uris():
    assert store.parse_uri("out/model") == store.Location("file", "", "out/model")
    assert store.parse_uri("file:///tmp/a%20b") == store.Location("file", "", "/tmp/a b")
    assert store.parse_uri("s3://bkt/runs/42/x.json") == store.Location("s3", "bkt", "runs/42/x.json")
    assert store.parse_uri("s3://bkt").child("m/1") == store.Location("s3", "bkt", "m/1")
    for bad, needle in [
        ("s3://", "s3://"),
        ("s3:///key", "s3:///key"),
        ("gs://b/k", "gs://b/k"),
        ("", "empty"),
    ]:
        with pytest.raises(StoreError, match=needle):
            store.parse_uri(bad)


def test_settings_from_env():
    base = {"TWT_S3_ACCESS_KEY": "ak", "TWT_S3_SECRET_KEY": "sk"}
    plain = S3Settings.from_env({**base, "TWT_S3_ENDPOINT": "minio.kubeflow:9000"})
    assert (plain.endpoint, plain.secure, plain.region) == ("minio.kubeflow:9000", True, None)
    url = S3Settings.from_env({**base, "TWT_S3_ENDPOINT": "http://minio:9000/", "TWT_S3_REGION": "eu"})
    assert (url.endpoint, url.secure, url.region) == ("minio:9000", False, "eu")
    assert not S3Settings.from_env({**base, "TWT_S3_ENDPOINT": "m:9000", "TWT_S3_SECURE": "false"}).secure
    aws = S3Settings.from_env(
        {"TWT_S3_ENDPOINT": "m:1", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
    )
    assert (aws.access_key, aws.secret_key) == ("a", "s")
    assert "sk" not in repr(plain)
    with pytest.raises(StoreError, match="TWT_S3_ENDPOINT"):
        S3Settings.from_env(base)
    with pytest.raises(StoreError, match="TWT_S3_SECRET_KEY"):
        S3Settings.from_env({"TWT_S3_ENDPOINT": "m:1", "TWT_S3_ACCESS_KEY": "ak"})
    with pytest.raises(StoreError, match="contradicts"):
        S3Settings.from_env({**base, "TWT_S3_ENDPOINT": "https://m", "TWT_S3_SECURE": "false"})
    with pytest.raises(StoreError, match="5 MiB"):
        dataclasses.replace(plain, part_size=1024)


def test_missing_env_var_is_named_by_s3_operations(monkeypatch, tmp_path):
    monkeypatch.setenv("TWT_S3_ENDPOINT", "127.0.0.1:9")
    for name in ("TWT_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StoreError, match="TWT_S3_ACCESS_KEY is not set"):
        store.get_file("s3://bkt/k", tmp_path / "k")
    monkeypatch.delenv("TWT_S3_ENDPOINT")
    with pytest.raises(StoreError, match="TWT_S3_ENDPOINT is not set"):
        store.exists("s3://bkt/k")


# ---- local paths and file:// ------------------------------------------------------------------------------


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_local_file_round_trip_and_checksum(tmp_path, as_uri):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello store")
    dst = tmp_path / "dir" / "copy.bin"
    target = dst.as_uri() if as_uri else str(dst)
    assert store.put_file(src, target) == sha(b"hello store") == store.sha256_file(src)
    assert dst.read_bytes() == b"hello store" and store.exists(target)
    back = tmp_path / "back.bin"
    assert store.get_file(target, back, sha256=sha(b"hello store")) == sha(b"hello store")
    assert back.read_bytes() == b"hello store"
    with pytest.raises(ChecksumError, match=r"expected sha256 0+, got"):
        store.get_file(target, tmp_path / "wrong.bin", sha256="0" * 64)
    assert not (tmp_path / "wrong.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "dir", "src.bin"]  # no temporary files
    with pytest.raises(NotFoundError, match=r"missing\.bin"):
        store.get_file(tmp_path / "missing.bin", tmp_path / "x")


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_local_publish_and_get_dir(tmp_path, as_uri):
    files = make_tree(tmp_path / "src")
    dst = tmp_path / "registry" / "m" / "1"
    target = dst.as_uri() if as_uri else str(dst)
    manifest = store.publish_dir(tmp_path / "src", target, metadata={"metrics": {"acc": 0.5}})
    assert set(manifest.files) == set(files) and manifest.files["a/b/c.txt"].size == 0
    assert read_tree(dst) == {**files, "MANIFEST.json": manifest.to_json().encode()}
    assert store.read_manifest(target).metadata == {"metrics": {"acc": 0.5}}
    assert store.exists(target) and not store.exists(tmp_path / "src")  # no manifest, not published
    assert sorted(store.list_uris(dst / "weights")) == [str(dst / "weights" / "model.safetensors")]

    with pytest.raises(AlreadyPublishedError, match="already published"):
        store.publish_dir(tmp_path / "src", target)
    assert [p.name for p in dst.parent.iterdir()] == ["1"]  # no staging directories left behind

    got = store.get_dir(target, tmp_path / "got")
    assert got.files == manifest.files and read_tree(tmp_path / "got") == read_tree(dst)
    (tmp_path / "src" / "config.json").write_bytes(b"{}")
    assert store.put_dir(tmp_path / "src", target).files["config.json"].sha256 == sha(b"{}")
    assert (dst / "config.json").read_bytes() == b"{}"

    (dst / "config.json").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match=r"config\.json"):
        store.get_dir(target, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(NotFoundError, match="not a published directory"):
        store.get_dir(tmp_path / "src", tmp_path / "nothing")
    assert store.delete(target) == 4 and not dst.exists()


# ---- S3 ------------------------------------------------------------------------------------------------


def test_s3_file_round_trip(s3, tmp_path):
    src = tmp_path / "metrics.json"
    src.write_text('{"acc": 0.9}\n')
    uri = s3.uri("runs/42/metrics.json")
    digest = store.put_file(src, uri)  # settings come from the environment
    assert s3.client.stat_object(s3.bucket, "runs/42/metrics.json").metadata["x-amz-meta-sha256"] == digest
    assert store.exists(uri) and not store.exists(s3.uri("runs/42/other.json"))
    assert store.list_uris(s3.uri("runs/4")) == [uri]
    assert store.get_file(uri, tmp_path / "back" / "m.json", sha256=digest) == digest
    assert (tmp_path / "back" / "m.json").read_text() == '{"acc": 0.9}\n'
    with pytest.raises(NotFoundError, match="no such object: s3://"):
        store.get_file(s3.uri("runs/42/missing"), tmp_path / "missing")
    with pytest.raises(NotFoundError, match="no such bucket 'nope-bucket'"):
        store.get_file("s3://nope-bucket/k", tmp_path / "k")
    assert store.delete(uri) == 1 and not store.exists(uri)


def test_s3_publish_and_get_dir(s3, tmp_path):
    files = make_tree(tmp_path / "src")
    uri = s3.uri("registry/student/1")
    manifest = store.publish_dir(tmp_path / "src", uri, metadata={"lineage": {"run": "r1"}})
    assert store.exists(uri) and store.read_manifest(uri) == manifest
    assert store.list_uris(uri) == sorted(
        s3.uri(f"registry/student/1/{r}") for r in [*files, "MANIFEST.json"]
    )
    got = store.get_dir(uri, tmp_path / "got")
    assert got == manifest
    assert read_tree(tmp_path / "got") == {**files, "MANIFEST.json": manifest.to_json().encode()}

    with pytest.raises(AlreadyPublishedError, match="already published"):
        store.publish_dir(tmp_path / "src", uri)
    (tmp_path / "src" / "config.json").write_bytes(b"{}")
    store.put_dir(tmp_path / "src", uri)  # the mutable variant replaces it
    assert store.read_manifest(uri).files["config.json"].sha256 == sha(b"{}")

    store.put_file(tmp_path / "src" / "config.json", s3.uri("loose/config.json"))
    with pytest.raises(
        NotFoundError, match=r"s3://.*/loose is not a published directory \(no MANIFEST.json\)"
    ):
        store.get_dir(s3.uri("loose"), tmp_path / "loose")
    assert not (tmp_path / "loose").exists()
    assert store.delete(uri) == 4 and store.list_uris(uri) == [] and store.exists(s3.uri("loose/config.json"))


def test_multipart_50mb_round_trip(s3, tmp_path):
    data = random.Random(0).randbytes(50 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    settings = dataclasses.replace(s3.settings, part_size=5 * 1024 * 1024)
    digest = store.put_file(tmp_path / "big.bin", s3.uri("big.bin"), settings=settings)
    stat = s3.client.stat_object(s3.bucket, "big.bin")
    assert stat.etag.endswith("-10") and stat.size == len(data)  # ten 5 MiB parts
    assert store.get_file(s3.uri("big.bin"), tmp_path / "back.bin", settings=settings) == digest == sha(data)
    assert (tmp_path / "back.bin").read_bytes() == data


def test_tampered_object_raises_checksum_error(s3, tmp_path):
    (tmp_path / "w.bin").write_bytes(b"good weights")
    digest = store.put_file(tmp_path / "w.bin", s3.uri("w.bin"))
    # Someone rewrites the bytes but keeps the recorded sha256.
    s3.client.put_object(s3.bucket, "w.bin", io.BytesIO(b"evil weights"), 12, metadata={"sha256": digest})
    with pytest.raises(
        ChecksumError, match=rf"s3://{s3.bucket}/w.bin: recorded sha256 {digest}, got {sha(b'evil weights')}"
    ):
        store.get_file(s3.uri("w.bin"), tmp_path / "out" / "w.bin")
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its temporary
    # A caller-given digest is checked as well.
    store.put_file(tmp_path / "w.bin", s3.uri("w.bin"))
    with pytest.raises(ChecksumError, match=f"expected sha256 {'ab' * 32}"):
        store.get_file(s3.uri("w.bin"), tmp_path / "out" / "w.bin", sha256="ab" * 32)
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(ChecksumError):
        store.put_file(tmp_path / "w.bin", s3.uri("w2.bin"), sha256="ab" * 32)
    assert not store.exists(s3.uri("w2.bin"))

    # In a published directory, one tampered file fails the whole get_dir and leaves nothing.
    make_tree(tmp_path / "src")
    store.publish_dir(tmp_path / "src", s3.uri("m/1"))
    s3.client.put_object(s3.bucket, "m/1/config.json", io.BytesIO(b"{}"), 2)  # no sha256 metadata at all
    with pytest.raises(ChecksumError, match=r"m/1/config\.json: expected sha256"):
        store.get_dir(s3.uri("m/1"), tmp_path / "m1")
    assert (
        not (tmp_path / "m1").exists()
        and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    )


def test_transient_errors_are_retried(s3, tmp_path, monkeypatch, sleeps):
    (tmp_path / "f.txt").write_text("x")
    calls = {"put": 0, "get": 0}
    real_put, real_get = Minio.fput_object, Minio.get_object

    def flaky_put(self, *args, **kwargs):
        calls["put"] += 1
        if calls["put"] <= 2:
            raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
        return real_put(self, *args, **kwargs)

    def flaky_get(self, *args, **kwargs):
        calls["get"] += 1
        if calls["get"] == 1:
            raise ServerError("server failed with HTTP status code 503", 503)
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(Minio, "fput_object", flaky_put)
    monkeypatch.setattr(Minio, "get_object", flaky_get)
    digest = store.put_file(tmp_path / "f.txt", s3.uri("f.txt"), settings=s3.settings)
    assert store.get_file(s3.uri("f.txt"), tmp_path / "g.txt", settings=s3.settings) == digest
    assert calls == {"put": 3, "get": 2} and sleeps == [0.05, 0.1, 0.05]
    # Errors that retrying cannot fix are not retried.
    with pytest.raises(NotFoundError):
        store.get_file(s3.uri("missing"), tmp_path / "m", settings=s3.settings)
    assert len(sleeps) == 3


def test_manifest_put_whose_response_was_lost_still_counts(s3, tmp_path, monkeypatch, sleeps):
    make_tree(tmp_path / "src")
    real = Minio._put_object
    lost = []

    def lose_first_response(self, bucket, key, *args, **kwargs):
        result = real(self, bucket, key, *args, **kwargs)
        if key.endswith("MANIFEST.json") and not lost:
            lost.append(key)
            raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
        return result

    monkeypatch.setattr(Minio, "_put_object", lose_first_response)
    manifest = store.publish_dir(
        tmp_path / "src", s3.uri("m/1")
    )  # the retry gets 412 and sees its own manifest
    assert lost and store.read_manifest(s3.uri("m/1")) == manifest


def test_concurrent_publishers_exactly_one_wins(s3, tmp_path, monkeypatch):
    """B publishes the same version while A is between its uploads and its manifest: If-None-Match decides."""
    make_tree(tmp_path / "a")
    make_tree(tmp_path / "b")
    uri = s3.uri("registry/m/7")
    real_upload = store._upload_file
    raced = []

    def upload_then_race(settings, loc, path, digest):
        real_upload(settings, loc, path, digest)
        if not raced and str(path).startswith(str(tmp_path / "a")) and loc.key.endswith("model.safetensors"):
            raced.append(True)
            store.publish_dir(tmp_path / "b", uri, metadata={"who": "b"})

    monkeypatch.setattr(store, "_upload_file", upload_then_race)
    with pytest.raises(AlreadyPublishedError, match="published by someone else meanwhile"):
        store.publish_dir(tmp_path / "a", uri, metadata={"who": "a"})
    assert raced and store.read_manifest(uri).metadata == {"who": "b"}


@pytest.mark.timeout(30)
def test_server_going_away_mid_publish_publishes_nothing(s3, tmp_path, monkeypatch):
    server, endpoint = start_server()  # a server of its own, to stop halfway
    settings = dataclasses.replace(s3.settings, endpoint=endpoint)
    make_tree(tmp_path / "src")
    real_upload = store._upload_file
    uploads = []

    def upload_then_stop(settings, loc, path, digest):
        real_upload(settings, loc, path, digest)
        uploads.append(loc.key)
        if len(uploads) == 1:
            server.stop()

    monkeypatch.setattr(store, "_upload_file", upload_then_stop)
    started = time.monotonic()
    with pytest.raises(UnreachableError) as caught:
        store.publish_dir(tmp_path / "src", s3.uri("m/1"), settings=settings)
    assert 0.05 + 0.1 <= time.monotonic() - started < 5  # two real backoff sleeps, no hang
    message = str(caught.value)
    assert message.startswith(f"publish of s3://{s3.bucket}/m/1 did not happen (no manifest written;")
    assert f"cannot reach S3 endpoint {endpoint} for s3://{s3.bucket}/m/1/" in message
    assert "after 3 attempts" in message and "\n" not in message
    assert uploads == ["m/1/a/b/c.txt"]

    # A plain get against the stopped server fails just as fast and clearly.
    with pytest.raises(
        UnreachableError, match=f"cannot reach S3 endpoint {endpoint} for s3://.*after 3 attempts"
    ):
        store.get_file(s3.uri("m/1/a/b/c.txt"), tmp_path / "c.txt", settings=settings)
    assert not (tmp_path / "c.txt").exists()

    # The server comes back on the same port: nothing is published there.
    server, _ = start_server(int(endpoint.rsplit(":", 1)[1]))
    try:
        assert not store.exists(s3.uri("m/1"), settings=settings)
        with pytest.raises(NotFoundError, match="not a published directory"):
            store.read_manifest(s3.uri("m/1"), settings=settings)
        assert store.list_uris(s3.uri("m/1"), settings=settings) == [
            s3.uri("m/1/a/b/c.txt")
        ]  # cleanup failed
    finally:
        server.stop()


def test_failed_publish_cleans_up_when_the_server_allows(s3, tmp_path, monkeypatch):
    make_tree(tmp_path / "src")
    real_upload = store._upload_file

    def fail_on_weights(settings, loc, path, digest):
        if loc.key.endswith("model.safetensors"):
            raise UnreachableError(
                f"cannot reach S3 endpoint {settings.endpoint} for {loc.uri} after 1 attempts"
            )
        real_upload(settings, loc, path, digest)

    monkeypatch.setattr(store, "_upload_file", fail_on_weights)
    with pytest.raises(
        UnreachableError, match=r"did not happen \(no manifest written; removed 2 uploaded object"
    ):
        store.publish_dir(tmp_path / "src", s3.uri("m/1"))
    assert store.list_uris(s3.uri("m/1")) == []


def test_manifest_paths_cannot_escape(tmp_path):
    text = json.dumps({"format": 1, "files": {"../../etc/passwd": {"sha256": "0" * 64, "size": 1}}})
    with pytest.raises(
        StoreError, match=r"malformed manifest m\.json: entry '\.\./\.\./etc/passwd' is not a normalised"
    ):
        store.Manifest.from_json(text, "m.json")
