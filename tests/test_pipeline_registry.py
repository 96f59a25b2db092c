"""Published pipeline templates (twt.registry.pipelines, pipelines/publish.py, ``twt pipeline``) against
a local directory and a real S3 HTTP server (moto, in-process, on 127.0.0.1); the KFP template registry
through a faked HTTP transport (no server).

    .venv/bin/python -m pytest tests/test_pipeline_registry.py -q

One real compile per module (``compiled``, ~3 s); the rest publishes small synthetic templates.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import io
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import kfp_client_double
from s3_server import Root

import pipelines.__main__ as pipelines_cli
from components.images import VERSION
from pipelines import publish as release_publish
from pipelines import release
from pipelines.release import ReleaseError
from twt.app.cli import main as twt_main
from twt.core import store
from twt.core.store import ChecksumError
from twt.registry import pipelines as preg
from twt.registry.claims import RegistryNameError, VersionExistsError, VersionNotFoundError

ROOT = Path(__file__).resolve().parents[1]
NAME = "twt-distillation"
ENV = ("TWT_PIPELINE_REGISTRY", "TWT_PIPELINE_TAGS", "TWT_KFP_REGISTRY_HOST", "TWT_KFP_REGISTRY_TOKEN")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    return release.compile_pipeline(tmp_path_factory.mktemp("compiled") / f"{NAME}-{VERSION}.yaml")


def template(tmp_path: Path, version: str, salt: str = "") -> tuple[Path, bytes]:
    """A small stand-in for a compiled template, different per version and salt."""
    data = f"# PIPELINE DEFINITION\n# Name: {NAME}\npipelineInfo:\n  name: {NAME}\n# {version} {salt}\n"
    data += "x: " + hashlib.sha256(f"{version}{salt}".encode()).hexdigest() * 20 + "\n"
    path = tmp_path / f"src-{version}-{salt}.yaml"
    path.write_text(data)
    return path, data.encode()


def publish(root: Root, tmp_path: Path, version: str, tags=(), salt: str = "", **meta) -> bytes:
    path, data = template(tmp_path, version, salt)
    metadata = {"package_version": version, "git_sha": f"sha{version.replace('.', '')}", **meta}
    preg.publish(path, root.uri, NAME, version, metadata=metadata, tags=tags, settings=root.settings)
    return data


def leftovers(path: Path) -> list[str]:
    return [p.name for p in path.parent.iterdir() if p.name.startswith(".")]


# ---- publish, pull, list ----------------------------------------------------------------------------------


def test_publish_then_pull_is_byte_identical(root, tmp_path):
    path, data = template(tmp_path, "0.1.0")
    meta = {"package_version": "0.1.0", "git_sha": "4e1f0c2a9b3d", "kfp_version": "2.17.0", "sha256": "lie"}
    found = preg.publish(
        path, root.uri, NAME, "0.1.0", metadata=meta, tags=["latest"], settings=root.settings
    )
    digest = hashlib.sha256(data).hexdigest()
    assert (found.ref, found.sha256, found.size, found.tags) == (
        f"{NAME}@0.1.0",
        digest,
        len(data),
        ("latest",),
    )
    assert (found.package_version, found.git_sha, found.kfp_version) == ("0.1.0", "4e1f0c2a9b3d", "2.17.0")
    base = store.parse_uri(root.uri)  # the layout
    assert found.uri == base.child(f"pipelines/{NAME}/0.1.0").uri
    assert found.template_uri == base.child(f"pipelines/{NAME}/0.1.0/{NAME}-0.1.0.yaml").uri
    manifest = store.read_manifest(found.uri, settings=root.settings)
    assert set(manifest.files) == {f"{NAME}-0.1.0.yaml"}
    assert manifest.metadata["sha256"] == digest  # reserved keys are the library's, not the caller's
    assert manifest.metadata["kind"] == preg.KIND and manifest.metadata["created"]
    tag = json.loads(preg._read_small(preg.tag_uri(root.uri, NAME, "latest"), root.settings))
    assert {k: tag[k] for k in ("pipeline", "tag", "version", "sha256")} == {
        "pipeline": NAME,
        "tag": "latest",
        "version": "0.1.0",
        "sha256": digest,
    }

    for ref in (f"{NAME}@0.1.0", f"{NAME}@latest"):
        out = tmp_path / f"out-{ref.split('@')[1]}.yaml"
        pulled = preg.pull(ref, root.uri, out, settings=root.settings)
        assert out.read_bytes() == data and pulled.sha256 == digest and pulled.version == "0.1.0"
    assert leftovers(out) == []
    with pytest.raises(preg.RegistryError, match="exists; pull writes a new file"):
        preg.pull(f"{NAME}@0.1.0", root.uri, out, settings=root.settings)
    out.write_text("old")
    preg.pull(f"{NAME}@0.1.0", root.uri, out, overwrite=True, settings=root.settings)
    assert out.read_bytes() == data


def test_republishing_a_version_fails_and_keeps_the_first(root, tmp_path):
    first = publish(root, tmp_path, "0.1.0")
    with pytest.raises(VersionExistsError, match=rf"{NAME}@0\.1\.0 is already published .*immutable"):
        publish(root, tmp_path, "0.1.0", salt="other bytes", tags=["latest"])
    with pytest.raises(preg.TagNotFoundError):  # the refused publish moved no tag
        preg.get_tag(root.uri, NAME, "latest", settings=root.settings)
    preg.pull(f"{NAME}@0.1.0", root.uri, tmp_path / "out.yaml", settings=root.settings)
    assert (tmp_path / "out.yaml").read_bytes() == first


def test_concurrent_publishes_of_one_version_exactly_one_wins(root, tmp_path):
    sources = [template(tmp_path, "0.3.0", salt) for salt in ("a", "b")]
    barrier, results = threading.Barrier(2), [None, None]

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = preg.publish(sources[i][0], root.uri, NAME, "0.3.0", settings=root.settings)
        except Exception as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    winners = [i for i, r in enumerate(results) if isinstance(r, preg.PipelineVersion)]
    assert len(winners) == 1 and isinstance(results[1 - winners[0]], VersionExistsError), results
    preg.pull(f"{NAME}@0.3.0", root.uri, tmp_path / "out.yaml", settings=root.settings)
    assert (tmp_path / "out.yaml").read_bytes() == sources[winners[0]][1]
    assert preg.list_pipelines(root.uri, settings=root.settings) == [NAME]  # the claim is gone


def test_list_shows_versions_tags_package_version_and_git_sha(root, tmp_path, monkeypatch, capsys):
    publish(root, tmp_path, "0.9.0", tags=["stable"], kfp_version="2.17.0")
    publish(root, tmp_path, "0.10.0", tags=["latest", "canary"], kfp_version="2.17.0")
    publish(root, tmp_path, "0.2.0")
    listed = preg.list_versions(root.uri, NAME, settings=root.settings)
    assert [(v.version, v.tags, v.package_version, v.git_sha) for v in listed] == [
        ("0.2.0", (), "0.2.0", "sha020"),
        ("0.9.0", ("stable",), "0.9.0", "sha090"),
        ("0.10.0", ("canary", "latest"), "0.10.0", "sha0100"),  # numeric order: 0.10 after 0.9
    ]
    assert set(preg.list_tags(root.uri, NAME, settings=root.settings)) == {"canary", "latest", "stable"}
    assert preg.list_pipelines(root.uri, settings=root.settings) == [NAME]
    assert preg.list_versions(root.uri, "other", settings=root.settings) == []

    monkeypatch.setenv("TWT_PIPELINE_REGISTRY", root.uri)  # the CLI's default root
    assert twt_main(["pipeline", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [f"{NAME}@0.2.0", f"{NAME}@0.9.0", f"{NAME}@0.10.0"]
    assert "package 0.10.0  git sha0100  kfp 2.17.0" in lines[2] and lines[2].endswith("tags: canary, latest")
    assert "tags" not in lines[0]

    assert twt_main(["pipeline", "tag", f"{NAME}@latest", "stable", "--root", root.uri]) == 0  # tag → tag
    assert capsys.readouterr().out.strip() == f"{NAME}@stable -> 0.10.0"
    out = tmp_path / "pulled.yaml"
    assert twt_main(["pipeline", "pull", f"{NAME}@stable", "--to", str(out)]) == 0
    assert "pulled twt-distillation@0.10.0 (git sha0100)" in capsys.readouterr().out
    assert out.read_bytes() == template(tmp_path, "0.10.0")[1]
    assert twt_main(["pipeline", "pull", f"{NAME}@9.9.9", "--to", str(tmp_path / "x.yaml")]) == 2
    assert "twt-distillation@9.9.9 does not exist" in capsys.readouterr().err


def test_latest_without_a_tag_is_the_highest_version_and_refs_are_checked(root, tmp_path):
    publish(root, tmp_path, "1.2")
    publish(root, tmp_path, "1.10")
    assert preg.resolve(root.uri, f"{NAME}@latest", settings=root.settings)[:2] == (NAME, "1.10")
    preg.set_tag(root.uri, NAME, "latest", "1.2", settings=root.settings)  # a set tag wins, even backwards
    assert preg.get_version(root.uri, f"{NAME}@latest", settings=root.settings).version == "1.2"
    with pytest.raises(preg.TagNotFoundError, match="no such tag"):
        preg.get_version(root.uri, f"{NAME}@stable", settings=root.settings)
    with pytest.raises(VersionNotFoundError, match=r"@3 does not exist"):
        preg.set_tag(root.uri, NAME, "stable", "3", settings=root.settings)
    for bad in ("twt", "twt@", "@1", "twt@1@2", "twt@01", "Twt@1", "twt@Stable", "twt@-x"):
        with pytest.raises(RegistryNameError):
            preg.parse_ref(bad)
    for bad in ("1", "Stable", "a_b", "a" * 64, "sha256:x", ""):
        with pytest.raises(RegistryNameError):
            preg.check_tag(bad)
    with pytest.raises(RegistryNameError):  # validated before anything is written
        publish(root, tmp_path, "2.0", tags=["ok", "Not OK"])
    assert [v.version for v in preg.list_versions(root.uri, NAME, settings=root.settings)] == ["1.2", "1.10"]
    publish(root, tmp_path, "2.0", tags="stable")  # one tag as a string, not the tags s, t, a, b, l, e
    assert list(preg.list_tags(root.uri, NAME, settings=root.settings)) == ["latest", "stable"]


# ---- tags move atomically ---------------------------------------------------------------------------------


def test_a_polling_reader_always_resolves_a_tag_to_a_complete_verified_version(root, tmp_path):
    versions = ["1.0", "1.1", "1.2"]
    expected = {v: publish(root, tmp_path, v) for v in versions}
    preg.set_tag(root.uri, NAME, "stable", "1.0", settings=root.settings)
    moves, done = 40, threading.Event()
    reads: list[str] = []
    errors: list[BaseException] = []

    def reader() -> None:
        out = tmp_path / "reader" / "pipeline.yaml"
        while not done.is_set():
            try:
                found = preg.pull(f"{NAME}@stable", root.uri, out, overwrite=True, settings=root.settings)
                assert out.read_bytes() == expected[found.version], found.version  # complete, that version's
                reads.append(found.version)
            except BaseException as err:
                errors.append(err)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(moves):
            preg.set_tag(root.uri, NAME, "stable", versions[(i + 1) % 3], settings=root.settings)
            if i % 5 == 0:  # let the reader in now and then, so it sees the tag move under it
                seen, deadline = len(reads), time.monotonic() + 5
                while len(reads) == seen and not errors and time.monotonic() < deadline:
                    time.sleep(0.002)
    finally:
        done.set()
        thread.join(20)
    assert errors == [] and len(reads) >= moves // 5, (errors, len(reads))
    assert len(set(reads)) >= 2  # the reader did see the tag move
    final = preg.get_tag(root.uri, NAME, "stable", settings=root.settings)
    assert final.version == versions[moves % 3]
    tags_dir = store.parse_uri(preg.tag_uri(root.uri, NAME, "stable"))
    if root.s3 is None:  # no temporary file left beside the tag
        assert sorted(p.name for p in Path(tags_dir.key).parent.iterdir()) == ["stable.json"]


def test_a_tag_is_replaced_in_one_write(root, tmp_path, monkeypatch):
    publish(root, tmp_path, "1.0")
    publish(root, tmp_path, "2.0")
    preg.set_tag(root.uri, NAME, "stable", "1.0", settings=root.settings)
    writes, deletes = [], []
    real_put = store.put_file
    monkeypatch.setattr(store, "put_file", lambda *a, **k: writes.append(a[1]) or real_put(*a, **k))
    monkeypatch.setattr(store, "delete", lambda *a, **k: deletes.append(a))
    preg.set_tag(root.uri, NAME, "stable", "2.0", settings=root.settings)
    assert writes == [preg.tag_uri(root.uri, NAME, "stable")] and deletes == []  # no delete-then-write
    assert os.path.getsize(template(tmp_path, "x")[0]) < store.MIN_PART_SIZE  # one PUT, never multipart


# ---- tampering --------------------------------------------------------------------------------------------


def test_a_tampered_template_is_refused_and_leaves_no_file(root, tmp_path):
    publish(root, tmp_path, "0.1.0", tags=["stable"])
    found = preg.get_version(root.uri, f"{NAME}@0.1.0", settings=root.settings)
    evil = b"pipelineInfo:\n  name: twt-distillation\n# and a container that mines coins\n"
    if root.s3:  # rewrite the bytes and keep the recorded sha256: only the manifest can tell
        key = store.parse_uri(found.template_uri).key
        recorded = root.s3.client.stat_object(root.s3.bucket, key).metadata["x-amz-meta-sha256"]
        root.s3.client.put_object(
            root.s3.bucket, key, io.BytesIO(evil), len(evil), metadata={"sha256": recorded}
        )
    else:
        Path(found.template_uri).write_bytes(evil)
    out = tmp_path / "out" / "pipeline.yaml"
    for ref in (f"{NAME}@0.1.0", f"{NAME}@stable"):
        with pytest.raises(ChecksumError, match=rf"pull of {NAME}@0\.1\.0 refused, nothing written"):
            preg.pull(ref, root.uri, out, settings=root.settings)
        assert not out.exists() and leftovers(out) == []
    assert twt_main(["pipeline", "pull", f"{NAME}@0.1.0", "--to", str(out), "--root", root.uri]) == 2
    assert not out.exists()


def test_a_tag_whose_sha256_differs_from_its_version_is_refused(root, tmp_path):
    publish(root, tmp_path, "0.1.0")
    record = preg.Tag(NAME, "stable", "0.1.0", "0" * 64, "2026-01-01T00:00:00+00:00")
    src = tmp_path / "stable.json"
    src.write_text(record.to_json())
    store.put_file(src, preg.tag_uri(root.uri, NAME, "stable"), settings=root.settings)
    with pytest.raises(ChecksumError, match=r"@stable points at 0\.1\.0 with sha256 0{64}"):
        preg.pull(f"{NAME}@stable", root.uri, tmp_path / "out.yaml", settings=root.settings)
    assert not (tmp_path / "out.yaml").exists()


# ---- python -m pipelines publish / upload ----------------------------------------------------------------


def test_cli_publish_records_what_it_was_compiled_from_and_refuses_a_second_time(s3, compiled, capsys):
    uri = f"s3://{s3.bucket}/registry"
    argv = ["publish", "--root", uri, "--package", str(compiled), "--tag", "latest", "--tag", "stable"]
    assert pipelines_cli.main([*argv, "--sha", "4e1f0c2a9b3d"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["registry"]["tags"] == ["latest", "stable"] and result["version"] == VERSION
    found = preg.get_version(uri, f"{NAME}@stable")
    assert (found.version, found.package_version, found.git_sha) == (VERSION, VERSION, "4e1f0c2a9b3d")
    assert found.kfp_version == "2.17.0"
    assert found.metadata["images"] == [
        f"ghcr.io/twt-project/twt-cpu:{VERSION}",
        f"ghcr.io/twt-project/twt-gpu:{VERSION}",
    ]
    assert found.sha256 == store.sha256_file(compiled) and found.template == f"{NAME}-{VERSION}.yaml"

    assert pipelines_cli.main([*argv, "--sha", "000000000000"]) == 2
    assert "is already published" in capsys.readouterr().err
    assert preg.get_version(uri, f"{NAME}@latest").git_sha == "4e1f0c2a9b3d"  # untouched


def test_publish_compiles_when_no_package_is_given_and_refuses_dirty_trees(tmp_path, compiled, monkeypatch):
    calls = []

    def fake_compile(out=None, version=VERSION, images=None):
        calls.append(version)
        return shutil.copy(compiled, tmp_path / f"{NAME}-{version}.yaml")

    monkeypatch.setattr(release, "compile_pipeline", fake_compile)  # not into the repository's dist/
    with pytest.raises(ReleaseError, match="uncommitted changes"):
        release_publish.publish_release(str(tmp_path / "reg"), sha="abc-dirty")
    with pytest.raises(ReleaseError, match="nowhere to publish"):
        release_publish.publish_release(None, compiled, sha="abc")
    assert calls == []  # both refused before compiling
    monkeypatch.setenv("TWT_PIPELINE_TAGS", "latest, stable")
    assert (
        pipelines_cli.main(
            ["publish", "--root", str(tmp_path / "reg"), "--sha", "abc-dirty", "--allow-dirty"]
        )
        == 0
    )
    assert calls == [VERSION]
    assert preg.get_version(str(tmp_path / "reg"), f"{NAME}@stable").git_sha == "abc-dirty"
    assert release_publish.env_tags({"TWT_PIPELINE_TAGS": " a,b  c "}) == ["a", "b", "c"]


def test_publish_refuses_a_template_whose_image_tags_differ(tmp_path, compiled):
    bad = tmp_path / "bad.yaml"
    bad.write_text(compiled.read_text().replace(f"twt-gpu:{VERSION}", "twt-gpu:9.9.9", 1))
    with pytest.raises(ReleaseError, match="image tags do not match"):
        release_publish.publish_release(str(tmp_path / "reg"), bad, sha="abc")
    assert not (tmp_path / "reg").exists()


def test_a_pulled_template_is_uploaded_byte_for_byte(root, tmp_path, compiled, monkeypatch, capsys):
    meta = {"package_version": VERSION, "git_sha": "4e1f0c2a9b3d"}
    preg.publish(compiled, root.uri, NAME, VERSION, metadata=meta, tags=["stable"], settings=root.settings)
    published = compiled.read_bytes()

    # twt pipeline pull, then upload --package FILE (the upload command of a fresh compile)
    pulled = tmp_path / "pulled.yaml"
    preg.pull(f"{NAME}@stable", root.uri, pulled, settings=root.settings)
    client = kfp_client_double(existing_id="pipeline-7")
    monkeypatch.setattr(pipelines_cli, "_client", lambda args: client)
    argv = ["upload", "--host", "http://kfp.test:8888", "--package", str(pulled), "--sha", "4e1f0c2a9b3d"]
    assert pipelines_cli.main(argv) == 0
    assert client.sent == [published]
    assert list(client.versions) == [f"{VERSION}-4e1f0c2a9b3d"]

    # upload --from: pulled and verified on the fly, named by the recorded git sha
    client = kfp_client_double(existing_id=None)
    argv = ["upload", "--host", "http://kfp.test:8888", "--from", f"{NAME}@stable", "--root", root.uri]
    capsys.readouterr()
    assert pipelines_cli.main(argv) == 0
    assert client.sent == [published, published]  # the pipeline, then its version <version>-<sha>
    assert client.upload_pipeline.call_args.kwargs["pipeline_name"] == NAME
    assert list(client.versions) == [f"{VERSION}-4e1f0c2a9b3d"]
    result = json.loads(capsys.readouterr().out)
    assert result["version"] == f"{VERSION}-4e1f0c2a9b3d" and result["ref"] == f"{NAME}@{VERSION}"
    assert result["sha256"] == hashlib.sha256(published).hexdigest()
    assert result["package"].endswith(f"pipelines/{NAME}/{VERSION}/{NAME}-{VERSION}.yaml")
    assert pipelines_cli.main([*argv, "--package", str(pulled)]) == 2  # one or the other


def test_upload_from_refuses_a_version_of_another_source_tree(tmp_path, monkeypatch):
    reg = str(tmp_path / "reg")
    path, _ = template(tmp_path, "0.0.9")
    preg.publish(path, reg, NAME, "0.0.9", metadata={"package_version": "0.0.9", "git_sha": "old"})
    monkeypatch.setattr(release, "pyproject_version", lambda: "0.1.0")
    connected = []
    with pytest.raises(ReleaseError, match=r"runs the 0\.0\.9 images, but this source tree is 0\.1\.0"):
        release_publish.upload_published(lambda: connected.append(1), f"{NAME}@0.0.9", reg)
    assert connected == []  # refused before connecting
    with pytest.raises(ReleaseError, match="--from needs the registry"):
        release_publish.upload_published(lambda: None, f"{NAME}@0.0.9", None)


# ---- KFP template registry (kfp.registry.RegistryClient) without a server ---------------------------------


@pytest.fixture
def kfp_transport(monkeypatch, tmp_path):
    """Fake requests' transport: record every prepared request and answer with ``state["answer"]``."""
    from kfp.registry import registry_client

    # no context or credentials from the home directory of whoever runs the tests
    monkeypatch.setattr(registry_client, "LOCAL_REGISTRY_CONTEXT", str(tmp_path / "no-context.json"))
    monkeypatch.setattr(registry_client, "LOCAL_REGISTRY_CREDENTIAL", str(tmp_path / "no-credentials.json"))
    state = {"sent": [], "status": 200, "answer": b""}

    def send(self, request, **kwargs):
        state["sent"].append(request)
        response = requests.Response()
        response.status_code, response._content = state["status"], state["answer"]
        response.request, response.url = request, request.url
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return state


def form_fields(request) -> dict[str, tuple[str | None, bytes]]:
    """The multipart/form-data fields of a prepared request: name → (file name, bytes)."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    return {
        part.get_param("name", header="content-disposition"): (
            part.get_filename(),
            part.get_payload(decode=True),
        )
        for part in message.iter_parts()
    }


def test_kfp_registry_upload_sends_the_file_and_tags(kfp_transport, compiled, monkeypatch, capsys):
    digest = store.sha256_file(compiled)
    kfp_transport["answer"] = f"{NAME}/sha256:{digest}".encode()
    host = "https://kfp-templates.example.test/twt/pipelines"
    monkeypatch.setenv("TWT_KFP_REGISTRY_TOKEN", "tok-123")
    argv = ["publish", "--package", str(compiled), "--sha", "abc", "--kfp-registry-host", host]
    assert pipelines_cli.main([*argv, "--tag", "latest", "--tag", "stable"]) == 0
    (request,) = kfp_transport["sent"]
    assert (request.method, request.url) == ("POST", host)
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert form_fields(request) == {
        "tags": (None, b"latest,stable"),
        "content": (compiled.name, compiled.read_bytes()),  # the file, byte for byte
    }
    printed = json.loads(capsys.readouterr().out)
    assert "registry" not in printed  # no --root: only the KFP registry
    assert printed["kfp_registry"] == {
        "host": host,
        "package": NAME,
        "version": f"sha256:{digest}",
        "tags": ["latest", "stable"],
        "same_digest": True,
    }


def test_kfp_registry_failure_after_the_store_publish_says_how_to_retry(kfp_transport, compiled, tmp_path):
    kfp_transport["status"], kfp_transport["answer"] = 409, b"conflict"
    reg = str(tmp_path / "reg")
    with pytest.raises(
        ReleaseError, match=r"is published at .*, but upload of .* failed: 409.*retry only that"
    ):
        release_publish.publish_release(reg, compiled, sha="abc", kfp_registry_host="http://kfp-reg.test")
    (request,) = kfp_transport["sent"]
    assert "authorization" not in request.headers and "tags" not in form_fields(request)  # no token, no tags
    assert preg.get_version(reg, f"{NAME}@{VERSION}").git_sha == "abc"  # the store publish stands


# ---- make publish-pipeline ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_publish_pipeline_takes_root_and_tags_from_the_environment():
    def dry_run(**env: str) -> str:
        # a run under `make test` (CI) passes MAKELEVEL/MAKEFLAGS down: the inner make then adds
        # "Entering/Leaving directory" lines unless told not to
        outer = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", *ENV}
        full = {k: v for k, v in os.environ.items() if k not in outer} | env
        command = ["make", "--no-print-directory", "-n", "publish-pipeline"]
        done = subprocess.run(command, cwd=ROOT, env=full, capture_output=True, text=True, check=True)
        return done.stdout.strip().splitlines()[-1]

    assert dry_run(TWT_PIPELINE_REGISTRY="s3://twt/registry").endswith(
        '-m pipelines publish --root "s3://twt/registry" --tag latest'
    )
    assert dry_run(TWT_PIPELINE_REGISTRY="/r", TWT_PIPELINE_TAGS="latest,stable").endswith(
        '--root "/r" --tag latest --tag stable'
    )
    assert dry_run(TWT_PIPELINE_REGISTRY="/r", TWT_PIPELINE_TAGS="").endswith('--root "/r"')
