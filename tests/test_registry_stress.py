"""Concurrent writers and crashes against the model registry, on a local directory and on S3 (moto).

The stress test runs worker processes (tests/registry_stress.py) that publish distinct versions, ``auto``
versions and the same versions at the same moments, and pull into shared destinations, all at once for a
bounded time. Its invariant: every listed version verifies and holds the bytes of the one worker that won it,
every version was won exactly once, every lost race was told which version, every winning pull found a
complete destination, no process saw a traceback, and nothing is left behind. The kill -9 test kills a
publish at random points, runs ``twt registry gc`` and publishes again: always one verified version.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
from helpers import write_model_dir

from twt.core import store
from twt.registry import claims
from twt.registry import models as registry

HERE = Path(__file__).parent
WORKER = HERE / "registry_stress.py"
TWT = Path(sys.executable).with_name("twt")
ROLES = {"auto": 2, "distinct": 1, "same": 3, "pull": 2}


def _env(root) -> dict[str, str]:
    """The environment of a worker: ours (with the TWT_S3_* of the s3 fixture), without TWT_DEBUG."""
    return {k: v for k, v in os.environ.items() if k != "TWT_DEBUG"}


def _model(work: Path, role: str, index: int) -> Path:
    path = work / f"model-{role}-{index}"
    write_model_dir(path, seed=zlib.crc32(f"{role}-{index}".encode()))
    lineage = json.loads((path / "twt.json").read_text())
    (path / "twt.json").write_text(json.dumps({**lineage, "worker": f"{role}-{index}"}))
    return path


def _published_bytes_match(root, version: registry.RegistryVersion, work: Path, settings) -> bool:
    """Pull (which verifies every checksum) and compare with the model of the worker that won."""
    out = work / "check" / version.version
    registry.pull(version.ref, root, out, settings=settings)
    source = work / f"model-{version.metadata['lineage']['worker']}"
    files = [p for p in source.rglob("*") if p.is_file()]
    return all((out / p.relative_to(source)).read_bytes() == p.read_bytes() for p in files)


def _leftovers(root, settings) -> list[str]:
    """Claims, staging directories and objects outside published versions."""
    loc = store.parse_uri(root)
    if loc.scheme == "file":
        base = Path(loc.key) / "stress"
        return [str(p) for p in base.rglob("*") if p.name.startswith(".")]
    published = {v.uri + "/" for v in registry.list_versions(root, "stress", settings=settings)}
    return [
        uri
        for uri in store.list_uris(root, settings=settings)
        if not any(uri.startswith(prefix) for prefix in published)
    ]


def run_stress(root, settings, work: Path, seconds: float, roles: dict[str, int]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    procs = []
    for role, count in roles.items():
        for index in range(count):
            if role != "pull":
                _model(work, role, index)
    for role, count in roles.items():
        for index in range(count):
            cmd = [sys.executable, str(WORKER), role, root, str(work), str(seconds), str(index)]
            procs.append(
                subprocess.Popen(
                    cmd, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )
    # meanwhile, several CLI processes publish one and the same version: one wins, the others get one line
    cli_models = [_model(work, "cli", i) for i in range(3)]
    time.sleep(min(2.0, seconds / 3))
    clis = [
        subprocess.Popen(
            [
                str(TWT),
                "registry",
                "publish",
                str(m),
                "--root",
                root,
                "--name",
                "stress",
                "--version",
                "9.9.9",
            ],
            env=_env(root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in cli_models
    ]
    outputs = [(p.args, *p.communicate(timeout=seconds + 120), p.returncode) for p in procs + clis]
    for args, out, err, code in outputs[: len(procs)]:
        assert code == 0 and "Traceback" not in err, f"{args}: exit {code}\n{out}\n{err}"
    cli_results = outputs[len(procs) :]
    assert all("Traceback" not in err for *_, err, _ in cli_results)
    cli_wins = [r for r in cli_results if r[3] == 0]
    for *_, err, code in cli_results:
        if code != 0:
            assert code == 2 and err.count("\n") == 1 and err.startswith("twt: error: stress@9.9.9 "), err

    events = [json.loads(line) for path in work.glob("log-*.jsonl") for line in path.read_text().splitlines()]
    publishes = [e for e in events if e["op"] == "publish"]
    won = Counter(e["version"] for e in publishes if e["ok"])
    won.update(["9.9.9"] * len(cli_wins))
    listed = registry.list_versions(root, "stress", settings=settings)
    assert sorted(won) == sorted(v.version for v in listed), "listed versions are exactly those won"
    assert all(n == 1 for n in won.values()), f"a version won twice: {won.most_common(3)}"
    assert len(cli_wins) == 1, cli_results
    for e in publishes:
        if not e["ok"]:
            assert f"stress@{e['asked']}" in e["error"] or e["asked"] == "auto", e
    for version in listed:
        assert _published_bytes_match(root, version, work, settings), version.ref
    pulls = [e for e in events if e["op"] == "pull"]
    assert all(e["complete"] for e in pulls if e["ok"]), "a winning pull found an incomplete destination"
    assert not _leftovers(root, settings)
    assert not [p.name for p in (work / "pulls").glob("*")]  # every pull moved its destination away
    auto = [e["version"] for e in publishes if e["asked"] == "auto" and e["ok"]]
    same = [e for e in publishes if e["role"] == "same"]
    return {
        "versions": len(listed),
        "publishes_won": sum(won.values()),
        "publishes_lost": sum(1 for e in publishes if not e["ok"]),
        "auto_won": len(auto),
        "same_slots": len({e["asked"] for e in same}),
        "pulls_won": sum(1 for e in pulls if e["ok"]),
        "pulls_lost": sum(1 for e in pulls if not e["ok"]),
        "cli_lost": len(cli_results) - len(cli_wins),
    }


def _stress_root(request, tmp_path, backend: str):
    if backend == "local":
        return str(tmp_path / "registry"), None
    s3 = request.getfixturevalue("s3")
    return f"s3://{s3.bucket}/registry", s3.settings


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_stress_concurrent_publishers_and_pullers(backend, request, tmp_path):
    root, settings = _stress_root(request, tmp_path, backend)
    started = time.monotonic()
    counts = run_stress(root, settings, tmp_path / "work", 8.0, ROLES)
    print(f"stress {backend}: {counts} in {time.monotonic() - started:.1f} s")
    # a loaded machine does less in the time; the CLI racers always contend (one won, two lost)
    assert counts["auto_won"] >= 1 and counts["pulls_won"] >= 1 and counts["cli_lost"] == 2, counts


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_stress_soak(backend, request, tmp_path):
    root, settings = _stress_root(request, tmp_path, backend)
    started = time.monotonic()
    counts = run_stress(
        root, settings, tmp_path / "work", 60.0, {"auto": 3, "distinct": 2, "same": 4, "pull": 3}
    )
    print(f"soak {backend}: {counts} in {time.monotonic() - started:.1f} s")
    assert counts["auto_won"] >= 10 and counts["same_slots"] >= 20, counts


# ---- kill -9 ---------------------------------------------------------------------------------------------


def _kill_at_random(root: str, work: Path, rng: random.Random) -> float:
    """Start a slow publish of stress@1 and kill -9 it after a random delay; returns the delay."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "killme", root, str(work), "0", "0"],
        env=_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    delay = rng.uniform(0.0, 0.35)  # the publish takes ~0.2-0.3 s: some kills land after it
    time.sleep(delay)
    proc.kill()
    proc.wait()  # reaped: its pid is gone, as when a pod's process is killed
    proc.stdout.close()
    proc.stderr.close()
    return delay


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_kill_9_then_gc_and_retry_ends_in_one_verified_version(backend, request, tmp_path):
    root0, settings = _stress_root(request, tmp_path, backend)
    rng, work = random.Random(16), tmp_path / "work"
    work.mkdir()
    _model(work, "killme", 0)
    for attempt in range(6):
        root = f"{root0}/try{attempt}"
        _kill_at_random(root, work, rng)
        if attempt == 0:  # the command says what it removes
            gc = subprocess.run(
                [str(TWT), "registry", "gc", "--root", root], env=_env(root), capture_output=True, text=True
            )
            assert gc.returncode == 0 and "Traceback" not in gc.stderr, gc.stderr
            assert gc.stdout.strip().splitlines()[-1].endswith(f"removed under {root}"), gc.stdout
        elif attempt % 2:
            claims.gc(root, settings=settings)
        # else: no gc first; the publish reclaims what the dead process left
        try:
            registry.publish(work / "model-killme-0", root, "stress", "1", settings=settings)
        except claims.VersionExistsError as err:
            assert "already exists" in str(err)  # the killed publish had finished
        claims.gc(root, settings=settings)  # a claim of a publish killed after its manifest goes here
        versions = registry.list_versions(root, "stress", settings=settings)
        assert [v.version for v in versions] == ["1"]
        registry.pull("stress@1", root, work / f"out{attempt}", settings=settings)  # verifies every file
        assert not _leftovers(root, settings), _leftovers(root, settings)


def test_a_live_claim_is_never_reclaimed_and_is_named(tmp_path):
    model = tmp_path / "model"
    write_model_dir(model)
    root = tmp_path / "reg"
    claim = claims._claim(root, "m", "1", None)  # held by this (live) process
    with pytest.raises(claims.VersionExistsError, match=r"claim .*\.publishing/1, held by process"):
        registry.publish(model, root, "m", "1")
    assert claims.gc(root) == []  # a live claim stays
    assert claims.gc(root, older_than_s=0.0, dry_run=True)[0].uri == claim  # too old: would go
    removed = claims.gc(root, older_than_s=0.0)
    assert [(r.kind, r.uri) for r in removed] == [("claim", claim)]
    assert registry.publish(model, root, "m", "1").version == "1"


def test_stale_staging_of_a_dead_process_is_swept_by_the_next_publish(tmp_path):
    model = tmp_path / "model"
    write_model_dir(model)
    root = tmp_path / "reg"
    registry.publish(model, root, "m", "1")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    left = root / "m" / f".2.{dead.stdout.strip()}@{store.this_host()}.abcd1234.tmp"
    left.mkdir()
    (left / "config.json").write_text("{}")
    mine = root / "m" / f".3.{store.owner_tag()}.abcd1234.tmp"  # a live process's (ours): kept
    mine.mkdir()
    assert [r.uri for r in claims.gc(root, dry_run=True)] == [str(left)]
    registry.publish(model, root, "m", "2")
    assert not left.exists() and mine.exists()


def test_one_reclaimer_at_a_time_and_an_interrupted_release_is_tidied(tmp_path):
    model, root = tmp_path / "model", tmp_path / "reg"
    write_model_dir(model)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    claim_uri = claims._claim_uri(root, "m", "1")
    meta = {"publisher": {"host": store.this_host(), "pid": int(dead.stdout), "id": "abc123"}}
    claims._publish_empty(claim_uri, meta, None)  # a claim whose owner is gone
    claim = claims.Claim.read(claim_uri, None)
    assert claim is not None and "is gone" in claim.stale(3600.0)
    claims._publish_empty(f"{claim_uri}.reclaim-abc123", {"publisher": claims._publisher()}, None)
    with pytest.raises(claims.VersionExistsError, match="another process is removing the abandoned claim"):
        registry.publish(model, root, "m", "1")  # someone (live: us) is reclaiming it right now
    store.delete(f"{claim_uri}.reclaim-abc123")
    assert registry.publish(model, root, "m", "1").version == "1"  # reclaimed, then published
    (root / "m" / ".publishing" / "2").mkdir(parents=True)  # a release cut short after the manifest went
    removed = claims.gc(root)
    assert [(r.kind, Path(r.uri).name) for r in removed] == [("claim", "2")]
    assert not (root / "m" / ".publishing").exists()
