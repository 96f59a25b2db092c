"""The container end-to-end check (``make e2e-containers``; images/e2e-containers.sh prepares the engine).

    DOCKER_HOST=unix:///run/podman.sock python tests/e2e_containers.py [--image REF] [--root DIR]

1. Starts a local S3 server (moto, 127.0.0.1) with a registry bucket, and sets TWT_S3_* here the way
   the cluster's MinIO Secret sets them in a pod.
2. Runs the compiled ``twt-distillation`` DAG with configs/smoke.yaml, every step in ``--image``
   (``python -m pipelines local --runner docker``): promotion publishes to S3 from inside its container.
3. Pulls the published student on the host (``twt registry pull``), verifying every checksum.
4. Runs again with questions from an S3 object that is not there: the run must fail, and its last line
   must be the failing step's own error.
5. Names an image the engine does not have: one line naming it.

Prints one JSON line of timings; exits non-zero with one line when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402
from s3_server import KEY, start_server  # noqa: E402

BUCKET = "twt-registry"
MISSING = f"s3://{BUCKET}/no-such/eval.jsonl"


def run(
    command: list[str], env: dict, what: str, expect_failure: bool = False
) -> subprocess.CompletedProcess:
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    print(f"e2e: {what}: exit {result.returncode} in {time.time() - started:.0f} s", flush=True)
    if (result.returncode != 0) != expect_failure:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"e2e: {what}: unexpected exit status {result.returncode}")
    return result


def main() -> int:
    from components.images import CPU_IMAGE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=CPU_IMAGE)
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "e2e-containers")
    args = parser.parse_args()
    root = args.root.resolve()
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    root.mkdir(parents=True)

    from minio import Minio

    server, endpoint = start_server()
    try:
        Minio(endpoint, KEY, KEY, secure=False).make_bucket(BUCKET)
        env = {
            **os.environ,
            "TWT_S3_ENDPOINT": f"http://{endpoint}",
            "TWT_S3_ACCESS_KEY": KEY,
            "TWT_S3_SECRET_KEY": KEY,
        }
        registry = f"s3://{BUCKET}/models"
        python = sys.executable
        local = [python, "-m", "pipelines", "local", "--runner", "docker", "--image", args.image]
        started = time.time()
        out = run(
            [*local, "--config", "configs/smoke.yaml", "--root", str(root / "ok"), "--registry", registry],
            env,
            "smoke DAG in containers",
        )
        dag_seconds = time.time() - started
        result = json.loads(out.stdout[out.stdout.rindex("\n{\n") :])  # the CLI's result, after the task logs
        promoted = result.get("promoted")
        if not promoted or not promoted.get("verified"):
            raise SystemExit(f"e2e: the run promoted nothing: {result}")
        pulled = root / "pulled"
        twt = str(Path(python).parent / "twt")
        run(
            [twt, "registry", "pull", promoted["ref"], "--root", registry, "--to", str(pulled)],
            env,
            "pull on host",
        )
        if not (pulled / "config.json").is_file():
            raise SystemExit(f"e2e: {pulled} has no config.json after the pull")

        # questions from an object that is not there: prepare-questions (no retries) fails in its container
        failing = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
        failing["task"] = {
            "kind": "files",
            "questions": f"s3://{BUCKET}/no-such/train.jsonl",
            "eval": MISSING,
        }
        failing_config = root / "failing.yaml"
        failing_config.write_text(yaml.safe_dump(failing))
        bad = run(
            [*local, "--config", str(failing_config), "--root", str(root / "fail"), "--registry", registry],
            env,
            "failing step",
            expect_failure=True,
        )
        last = bad.stderr.strip().splitlines()[-1] if bad.stderr.strip() else ""
        if "a step failed in" not in last or "no-such/train.jsonl" not in last:
            raise SystemExit(f"e2e: the failing run did not name the step's error: {last!r}")
        print(f"e2e: the failing run says: {last}")
        # an image the engine does not have and cannot pull: one line naming it
        missing = "localhost/twt-no-such-image:0"
        gone = run(
            [python, "-m", "pipelines", "local", "--runner", "docker", "--image", missing,
             "--config", "configs/smoke.yaml", "--root", str(root / "missing")],
            env, "missing image", expect_failure=True,
        )  # fmt: skip
        if gone.stderr.count("\n") != 1 or missing not in gone.stderr:
            raise SystemExit(f"e2e: a missing image did not end in one line naming it: {gone.stderr!r}")
    finally:
        server.stop()
    print(json.dumps({"ref": promoted["ref"], "dag_seconds": round(dag_seconds, 1), "image": args.image}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
