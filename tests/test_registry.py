"""twt.registry.models against a local directory and a real S3 HTTP server (moto, in-process, on 127.0.0.1).

.venv/bin/python -m pytest tests/test_registry.py -q
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import threading
from pathlib import Path

import pytest
from helpers import MODEL_GATE, MODEL_METRICS, publish_with_records, write_model_dir
from s3_server import start_server

from twt.core import store
from twt.core.store import ChecksumError, StoreError
from twt.registry import card as model_card
from twt.registry import claims
from twt.registry import models as registry
from twt.registry.claims import RegistryError, RegistryNameError, VersionExistsError, VersionNotFoundError


def read_tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def leftovers(path: Path) -> list[str]:
    """Hidden staging directories or files beside ``path`` (what a failed download could leave)."""
    return [p.name for p in path.parent.iterdir() if p.name.startswith(".")]


# ---- publish, pull, list ---------------------------------------------------------------------------------


def test_publish_then_pull_is_byte_identical(root, tmp_path):
    files = write_model_dir(tmp_path / "model")
    published = registry.publish(
        tmp_path / "model",
        root.uri,
        "student",
        "1",
        metrics=MODEL_METRICS,
        gate=MODEL_GATE,
        settings=root.settings,
    )
    assert (published.model, published.version, published.ref) == ("student", "1", "student@1")
    assert published.uri == store.parse_uri(root.uri).child("student/1").uri
    assert published.files == len(files) + 1  # the card too
    card = store.read_manifest(published.uri, settings=root.settings).files["README.md"]
    assert published.total_bytes == sum(len(b) for b in files.values()) + card.size

    pulled = registry.pull("student@1", root.uri, tmp_path / "out", settings=root.settings)
    assert pulled == published
    got = read_tree(tmp_path / "out")
    assert {rel: got[rel] for rel in files} == files  # every model file, byte for byte
    assert set(got) == {*files, "README.md", "MANIFEST.json"}
    assert "# student 1" in got["README.md"].decode()
    assert leftovers(tmp_path / "out") == []

    meta = registry.show(root.uri, "student@latest", settings=root.settings)
    assert meta["model"] == "student" and meta["version"] == "1" and meta["kind"] == registry.KIND
    assert meta["metrics"] == MODEL_METRICS and meta["gate"] == MODEL_GATE
    assert meta["lineage"] == json.loads(files["twt.json"])  # lineage defaults to the model's twt.json
    assert registry.list_versions(root.uri, settings=root.settings) == ["student"]
    assert registry.list_models(root.uri, settings=root.settings) == ["student"]
    assert [v.headline for v in registry.list_versions(root.uri, "student", settings=root.settings)] == [
        {"accuracy": 0.80, "mean_output_tokens": 8.0}  # the gate's student, stage3
    ]


def test_auto_increments_and_latest_is_the_highest(root, tmp_path):
    write_model_dir(tmp_path / "model")

    def publish(version: str) -> str:
        return registry.publish(
            tmp_path / "model", root.uri, "student", version, settings=root.settings
        ).version

    assert [publish("auto") for _ in range(3)] == ["1", "2", "3"]
    assert publish("10") == "10" and publish("1.2.3") == "1.2.3" and publish("auto") == "11"
    listed = registry.list_versions(root.uri, "student", settings=root.settings)
    assert [v.version for v in listed] == ["1", "1.2.3", "2", "3", "10", "11"]  # numeric, not "10" < "2"
    assert all(v.created and v.files == 7 for v in listed)
    assert registry.resolve(root.uri, "student@latest", settings=root.settings) == ("student", "11")
    assert registry.pull("student@latest", root.uri, tmp_path / "out", settings=root.settings).version == "11"
    registry.publish(tmp_path / "model", root.uri, "other", settings=root.settings)
    assert registry.list_models(root.uri, settings=root.settings) == ["other", "student"]
    assert registry.get_version(root.uri, "other@latest", settings=root.settings).version == "1"
    with pytest.raises(VersionNotFoundError, match="no published version of 'nobody'"):
        registry.resolve(root.uri, "nobody@latest", settings=root.settings)


def test_a_published_version_is_immutable(root, tmp_path):
    first = write_model_dir(tmp_path / "a", seed=1)
    write_model_dir(tmp_path / "b", seed=2)
    registry.publish(tmp_path / "a", root.uri, "student", "2.0", settings=root.settings)
    with pytest.raises(VersionExistsError, match=r"student@2\.0 already exists at .*immutable"):
        registry.publish(tmp_path / "b", root.uri, "student", "2.0", settings=root.settings)
    registry.pull("student@2.0", root.uri, tmp_path / "out", settings=root.settings)
    assert read_tree(tmp_path / "out")["model.safetensors"] == first["model.safetensors"]
    assert isinstance(VersionExistsError("x"), store.AlreadyPublishedError)


def test_pull_refuses_missing_versions_and_busy_destinations(root, tmp_path):
    write_model_dir(tmp_path / "model")
    registry.publish(tmp_path / "model", root.uri, "student", settings=root.settings)
    with pytest.raises(VersionNotFoundError, match="student@7 does not exist"):
        registry.pull("student@7", root.uri, tmp_path / "out", settings=root.settings)
    assert not (tmp_path / "out").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(RegistryError, match="busy exists and is not an empty directory"):
        registry.pull("student@1", root.uri, tmp_path / "busy", settings=root.settings)
    assert read_tree(tmp_path / "busy") == {"keep.txt": b"mine"}
    (tmp_path / "empty").mkdir()  # an empty directory is fine (KFP pre-creates outputs)
    registry.pull("student@1", root.uri, tmp_path / "empty", settings=root.settings)
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def test_only_manifests_at_model_version_with_valid_names_count(root, tmp_path):
    write_model_dir(tmp_path / "model")
    registry.publish(tmp_path / "model", root.uri, "student", settings=root.settings)
    base = store.parse_uri(root.uri)
    for stray in ["student/beta", "student/01", "student/1/nested", "Bad Name/1", "loose"]:
        store.publish_dir(tmp_path / "model", base.child(stray).uri, settings=root.settings)
    assert registry.list_models(root.uri, settings=root.settings) == ["student"]
    assert [v.version for v in registry.list_versions(root.uri, "student", settings=root.settings)] == ["1"]
    assert registry.resolve(root.uri, "student@latest", settings=root.settings) == ("student", "1")
    # A manifest that names another model or version is not taken for this one.
    store.publish_dir(
        tmp_path / "model",
        base.child("student/5").uri,
        metadata={"model": "x", "version": "9"},
        settings=root.settings,
    )
    with pytest.raises(RegistryError, match=r"student@5: the manifest at .* describes x@9"):
        registry.pull("student@5", root.uri, tmp_path / "out", settings=root.settings)
    assert not (tmp_path / "out").exists()


# ---- damage: tampering, interruption, races --------------------------------------------------------------


def test_a_tampered_object_is_refused_and_leaves_nothing(root, tmp_path):
    write_model_dir(tmp_path / "model")
    version = registry.publish(tmp_path / "model", root.uri, "student", settings=root.settings)
    evil = b"evil weights"
    if root.s3:  # rewrite the bytes and keep the recorded sha256: only the manifest can tell
        key = store.parse_uri(version.uri).child("model.safetensors").key
        recorded = root.s3.client.stat_object(root.s3.bucket, key).metadata["x-amz-meta-sha256"]
        root.s3.client.put_object(
            root.s3.bucket, key, io.BytesIO(evil), len(evil), metadata={"sha256": recorded}
        )
    else:
        (Path(version.uri) / "model.safetensors").write_bytes(evil)
    with pytest.raises(
        ChecksumError, match=r"pull of student@1 refused, nothing written to .*model\.safetensors"
    ):
        registry.pull("student@1", root.uri, tmp_path / "out", settings=root.settings)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path / "out") == []


def test_an_interrupted_publish_leaves_no_version(root, tmp_path, monkeypatch):
    write_model_dir(tmp_path / "model")
    copier = "_upload_file" if root.s3 else "_copy_verified"  # how publish_dir moves one file
    real, calls = getattr(store, copier), []

    def fail_third(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise store.UnreachableError("connection reset while uploading (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, copier, fail_third)
    with pytest.raises(store.UnreachableError, match="simulated"):
        registry.publish(tmp_path / "model", root.uri, "student", "1", settings=root.settings)
    assert len(calls) == 3
    assert registry.list_versions(root.uri, "student", settings=root.settings) == []
    assert registry.list_models(root.uri, settings=root.settings) == []
    with pytest.raises(VersionNotFoundError, match="student@1 does not exist"):
        registry.pull("student@1", root.uri, tmp_path / "out", settings=root.settings)
    with pytest.raises(VersionNotFoundError):
        registry.show(root.uri, "student@latest", settings=root.settings)
    if root.s3:  # the uploads were removed and the claim released
        assert store.list_uris(root.uri, settings=root.settings) == []
    monkeypatch.setattr(store, copier, real)
    assert (
        registry.publish(tmp_path / "model", root.uri, "student", "1", settings=root.settings).version == "1"
    )


@pytest.mark.timeout(30)
def test_server_gone_mid_publish_leaves_an_invisible_version_and_a_named_claim(s3, tmp_path, monkeypatch):
    server, endpoint = start_server()  # a server of its own, to stop halfway (moto's state is shared)
    settings = dataclasses.replace(s3.settings, endpoint=endpoint)
    write_model_dir(tmp_path / "model")
    real, uploads = store._upload_file, []

    def upload_then_stop(*args):
        real(*args)
        uploads.append(args[1].key)
        if len(uploads) == 2:
            server.stop()

    monkeypatch.setattr(store, "_upload_file", upload_then_stop)
    root = f"s3://{s3.bucket}/reg"
    with pytest.raises(store.UnreachableError, match=r"did not happen.*the claim s3://.*/reg/student/"):
        registry.publish(tmp_path / "model", root, "student", "1", settings=settings)
    monkeypatch.setattr(store, "_upload_file", real)
    server, _ = start_server(int(endpoint.rsplit(":", 1)[1]))
    try:
        assert len(store.list_uris(root, settings=settings)) >= 2  # objects and claim left behind...
        assert registry.list_versions(root, "student", settings=settings) == []  # ...but no version
        with pytest.raises(VersionNotFoundError, match="student@1 does not exist"):
            registry.pull("student@1", root, tmp_path / "out", settings=settings)
        claim = f"s3://{s3.bucket}/reg/student/.publishing/1"
        with pytest.raises(
            VersionExistsError, match=f"being published by another process \\(claim {claim}, held by process"
        ):
            registry.publish(tmp_path / "model", root, "student", "1", settings=settings)
        assert registry.publish(tmp_path / "model", root, "student", settings=settings).version == "2"
        store.delete(claim, settings=settings)  # what the message says to do
        assert registry.publish(tmp_path / "model", root, "student", "1", settings=settings).version == "1"
        registry.pull("student@1", root, tmp_path / "out", settings=settings)
    finally:
        server.stop()


def _race(tmp_path, monkeypatch, publish_args: list[tuple]) -> list[object]:
    """Run the publishes in threads that all pass the existence check before any of them claims."""
    barrier = threading.Barrier(len(publish_args), timeout=10)
    real_claim, waited = claims._claim, set()

    def claim_together(*args):
        if threading.get_ident() not in waited:  # the first claim of each thread; auto retries go on alone
            waited.add(threading.get_ident())
            barrier.wait()
        return real_claim(*args)

    monkeypatch.setattr(claims, "_claim", claim_together)
    results: list[object] = [None] * len(publish_args)

    def run(i: int) -> None:
        try:
            results[i] = registry.publish(*publish_args[i][:4], settings=publish_args[i][4])
        except Exception as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(publish_args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def test_concurrent_publishes_of_one_version_exactly_one_wins(root, tmp_path, monkeypatch):
    trees = [write_model_dir(tmp_path / name, seed=i) for i, name in enumerate(["a", "b"])]
    args = [(tmp_path / name, root.uri, "student", "4", root.settings) for name in ["a", "b"]]
    results = _race(tmp_path, monkeypatch, args)
    winners = [i for i, r in enumerate(results) if isinstance(r, registry.RegistryVersion)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert isinstance(losers[0], VersionExistsError) and "student@4" in str(losers[0])
    registry.pull("student@4", root.uri, tmp_path / "out", settings=root.settings)  # verified
    got = read_tree(tmp_path / "out")
    assert {rel: got[rel] for rel in trees[0]} == trees[winners[0]]  # the winner's bytes, all of them


def test_concurrent_auto_publishes_take_the_next_numbers(root, tmp_path, monkeypatch):
    trees = [write_model_dir(tmp_path / name, seed=i) for i, name in enumerate(["a", "b"])]
    args = [(tmp_path / name, root.uri, "student", "auto", root.settings) for name in ["a", "b"]]
    results = _race(tmp_path, monkeypatch, args)
    assert all(isinstance(r, registry.RegistryVersion) for r in results), results
    assert sorted(r.version for r in results) == ["1", "2"]
    for tree, result in zip(trees, results, strict=True):
        out = tmp_path / f"out-{result.version}"
        registry.pull(result.ref, root.uri, out, settings=root.settings)
        assert read_tree(out)["model.safetensors"] == tree["model.safetensors"]


# ---- names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "A B", "x/y", "", "a" * 64, "a..b", "-x", ".x", "Student", "a@b"])
def test_invalid_model_names_are_rejected(name, tmp_path):
    write_model_dir(tmp_path / "model")
    with pytest.raises(RegistryNameError, match=f"invalid model name {name!r}"):
        registry.publish(tmp_path / "model", tmp_path / "reg", name, "1")
    assert not (tmp_path / "reg").exists() and not (tmp_path / "x").exists()
    assert isinstance(RegistryNameError("x"), ValueError) and isinstance(RegistryNameError("x"), StoreError)


@pytest.mark.parametrize("version", ["", "01", "1.2.3.4", "v1", "latest", "1.", "1..2", "x", "1/2", "-1"])
def test_invalid_versions_are_rejected(version, tmp_path):
    write_model_dir(tmp_path / "model")
    with pytest.raises(RegistryNameError, match=f"invalid version {version!r}"):
        registry.publish(tmp_path / "model", tmp_path / "reg", "student", version)
    assert not (tmp_path / "reg").exists()


def test_versions_and_refs():
    assert claims.check_model_name("twt-student_2.0") == "twt-student_2.0"
    good = ["0", "7", "1.2", "1.2.3", "10.0.1", "999999999"]
    assert [claims.check_version(v) for v in good] == good
    assert sorted(["2", "1.10", "1.9", "10", "1", "1.0"], key=claims.version_key) == [
        "1",
        "1.0",
        "1.9",
        "1.10",
        "2",
        "10",
    ]
    assert registry.parse_ref("student@1.2") == ("student", "1.2")
    assert registry.parse_ref("student@latest") == ("student", "latest")
    for bad in ["student", "student@", "@1", "a@b@c", ""]:
        with pytest.raises(RegistryNameError, match=r"expected NAME@VERSION or NAME@latest"):
            registry.parse_ref(bad)
    with pytest.raises(RegistryNameError, match="invalid version '01'"):
        registry.parse_ref("student@01")
    with pytest.raises(RegistryNameError, match=r"invalid model name '\.\./x'"):
        registry.parse_ref("../x@1")


def test_what_is_published_from_the_model_directory(tmp_path):
    files = write_model_dir(tmp_path / "model")
    (tmp_path / "model" / "checkpoints" / "step-10").mkdir(parents=True)
    (tmp_path / "model" / "checkpoints" / "step-10" / "optimizer.pt").write_bytes(b"state")
    (tmp_path / "model" / ".cache").mkdir()
    (tmp_path / "model" / ".cache" / "x").write_bytes(b"x")
    (tmp_path / "model" / "README.md").write_text("an old card")
    version = registry.publish(tmp_path / "model", tmp_path / "reg", "student")
    published = read_tree(Path(version.uri))
    assert set(published) == {*files, "README.md", "MANIFEST.json"}
    assert published["README.md"].startswith(b"# student 1")
    (tmp_path / "model" / "config.json").unlink()
    with pytest.raises(RegistryError, match="not a Hugging Face model directory"):
        registry.publish(tmp_path / "model", tmp_path / "reg", "student")
    with pytest.raises(store.NotFoundError, match="no such model directory"):
        registry.publish(tmp_path / "nothing", tmp_path / "reg", "student")
    assert [v.version for v in registry.list_versions(tmp_path / "reg", "student")] == ["1"]
    assert not (tmp_path / "reg" / "student" / ".publishing").exists()  # claims are cleaned up


# ---- the model card ----------------------------------------------------------------------------------------


def test_the_model_card_has_metrics_gate_lineage_pull_and_files(tmp_path):
    files = write_model_dir(tmp_path / "model")
    version = publish_with_records(
        tmp_path / "model", tmp_path / "reg", card_extra={"Intended use": "Arithmetic word problems only."}
    )
    card = (Path(version.uri) / "README.md").read_text()
    assert "# student 1" in card and f"- Created: {version.created}" in card
    assert "- Base model: Qwen/Qwen2.5-0.5B" in card  # stage 1's parent, not twt.json's previous stage
    table = card.split("## Metrics")[1].split("## Gate")[0]
    assert "| model | accuracy | mean output tokens | tokens per correct |" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "| model |" not in line]
    assert rows[0] == "| **stage3** (this model) | 80.0% | 8.0 | 10.0 |"  # 8 tokens / 0.8 correct
    assert "| stage1 | 90.0% | 40.0 | 44.4 |" in rows and "| student-base | 25.0% | 4.0 | 16.0 |" in rows
    gate = card.split("## Gate")[1].split("## Lineage")[0]
    assert "Verdict: **passed** (promoted: stage3)" in gate
    assert "- stage3 accuracy 80.0% ≥ the minimum 50.0%" in gate
    lineage = card.split("## Lineage")[1].split("## How to pull")[0]
    assert "- Teachers: teacher-verbose, teacher-terse" in lineage
    assert "- DCRS candidates: in 1200, kept 340, rejected_quality 700, rejected_diversity 160" in lineage
    assert "- Compression: method cts, target_ratio 0.5, achieved_ratio 0.52" in lineage
    assert "stage 1 on distill.jsonl (340 rows); stage 3 on distill.jsonl (340 rows)" in lineage
    assert "- Pipeline run: run-7f3a" in lineage
    assert "twt registry pull student@1 --to DIR" in card
    digest = hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert f"| `model.safetensors` | 100000 | `{digest}` |" in card
    assert "## Intended use\n\nArithmetic word problems only." in card
    assert "not recorded" not in card


def test_the_model_card_says_not_recorded_for_missing_parts():
    card = model_card.render_card({"model": "m", "version": "1"}, {}, "reg/m/1")
    for section in ["## Metrics", "## Gate", "## Lineage"]:
        assert card.split(section)[1].lstrip().startswith("not recorded"), section
    assert "- Created: not recorded" in card and "- Base model: not recorded" in card
    partial = model_card.render_card(
        {"metrics": {"accuracy": 0.5}, "gate": {"passed": False}, "lineage": {"teachers": []}}, {}, "u"
    )
    assert "| **student** (this model) | 50.0% | not recorded | not recorded |" in partial
    assert "Verdict: **failed**" in partial and "Reasons: not recorded" in partial
    assert "- Teachers: not recorded" in partial and "- Compression: not recorded" in partial


def test_a_gate_verdict_object_is_recorded_as_its_dict(tmp_path):
    from twt.method.gate import decide

    write_model_dir(tmp_path / "model")
    verdict = decide(MODEL_METRICS)
    version = registry.publish(
        tmp_path / "model", tmp_path / "reg", "student", metrics=MODEL_METRICS, gate=verdict
    )
    assert version.metadata["gate"] == verdict.to_dict()
    assert (
        f"Verdict: **{'passed' if verdict.passed else 'failed'}**"
        in (Path(version.uri) / "README.md").read_text()
    )


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_retried_run_gets_the_version_it_already_published(where, tmp_path, request):
    """A promotion step that published and then failed (or was retried by KFP) publishes nothing new: the
    same run with the same files gets its version back; another run, or other weights, gets a new one."""
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        root, settings = f"s3://{s3.bucket}/reg", s3.settings
    else:
        root, settings = tmp_path / "reg", None
    write_model_dir(tmp_path / "model")
    first = registry.publish(tmp_path / "model", root, "student", run_id="run-1", settings=settings)
    again = registry.publish(tmp_path / "model", root, "student", run_id="run-1", settings=settings)
    explicit = registry.publish(tmp_path / "model", root, "student", "1", run_id="run-1", settings=settings)
    assert first.version == again.version == explicit.version == "1" and again.created == first.created
    assert registry.get_version(root, "student@1", settings=settings).metadata["run_id"] == "run-1"
    assert (
        registry.publish(tmp_path / "model", root, "student", run_id="run-2", settings=settings).version
        == "2"
    )
    assert (
        registry.publish(tmp_path / "model", root, "student", settings=settings).version == "3"
    )  # no run id
    write_model_dir(tmp_path / "other", seed=1)
    assert (
        registry.publish(tmp_path / "other", root, "student", run_id="run-1", settings=settings).version
        == "4"
    )
    with pytest.raises(claims.VersionExistsError):  # a version named by hand stays immutable
        registry.publish(tmp_path / "other", root, "student", "1", run_id="run-1", settings=settings)
    assert [v.version for v in registry.list_versions(root, "student", settings=settings)] == [
        "1",
        "2",
        "3",
        "4",
    ]
