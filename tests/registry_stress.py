"""One worker process of the registry stress test (tests/test_registry_stress.py).

    python tests/registry_stress.py ROLE ROOT WORKDIR SECONDS INDEX

Publishes or pulls ``stress`` in a loop for SECONDS and appends every outcome to
``WORKDIR/log-ROLE-INDEX.jsonl``. Roles:
  auto      publish ``auto`` again and again (all must get distinct versions)
  distinct  publish ``1.INDEX.k`` for k = 1, 2, ... (versions no other worker asks for)
  same      publish ``2.0.SLOT`` where SLOT is the current second: every ``same`` worker asks for the
            same version at the same moment, so exactly one of them may win it
  pull      pull ``stress@latest`` into the one destination shared by every ``pull`` worker; a pull that
            wins checks that the destination is complete, then moves it away
  killme    publish ``1`` once, slowly (a pause before each file), after printing ``ready``: the kill -9 test
Expected failures (a lost race) are recorded; anything else escapes with its traceback, which the test
treats as a failure. The model to publish is ``WORKDIR/model-ROLE-INDEX`` (made by the test).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from twt.core import store
from twt.registry import models as registry

MODEL = "stress"
SLOT_S = 1.0


def _complete(path: Path) -> bool:
    """Every file the manifest names is there with its checksum, and nothing else."""
    manifest = store.read_manifest(path)
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    if present != {*manifest.files, store.MANIFEST_NAME}:
        return False
    return all(store.sha256_file(path / rel) == e.sha256 for rel, e in manifest.files.items())


def _publish(root: str, model_dir: Path, version: str, record) -> None:
    try:
        found = registry.publish(model_dir, root, MODEL, version)
        record(op="publish", asked=version, version=found.version, ok=True)
    except registry.VersionExistsError as err:
        record(op="publish", asked=version, ok=False, error=str(err))


def _pull(root: str, dst: Path, record) -> None:
    try:
        found = registry.pull(f"{MODEL}@latest", root, dst)
    except (registry.VersionNotFoundError, store.StoreError) as err:
        record(op="pull", ok=False, error=str(err))
        return
    ok = _complete(dst)
    trash = dst.with_name(f"trash-{uuid.uuid4().hex}")
    os.rename(dst, trash)  # atomic: the destination goes from complete to absent
    shutil.rmtree(trash)
    record(op="pull", ok=True, version=found.version, complete=ok)


def _slow_file_copies(pause_s: float) -> None:
    """Pause before each file goes to the store, so that a kill lands anywhere inside the publish."""
    copy, upload = store._copy_verified, store._upload_file

    def slow_copy(*args, **kwargs):
        time.sleep(pause_s)
        return copy(*args, **kwargs)

    def slow_upload(*args, **kwargs):
        time.sleep(pause_s)
        return upload(*args, **kwargs)

    store._copy_verified, store._upload_file = slow_copy, slow_upload


def main(role: str, root: str, workdir: str, seconds: str, index: str) -> None:
    work, number = Path(workdir), int(index)
    model_dir = work / f"model-{role}-{number}"
    with (work / f"log-{role}-{number}.jsonl").open("a") as log:

        def record(**fields) -> None:
            log.write(json.dumps({"role": role, "worker": number, **fields}) + "\n")
            log.flush()

        if role == "killme":
            _slow_file_copies(0.03)
            print("ready", flush=True)
            _publish(root, model_dir, "1", record)
            return
        deadline, k = time.monotonic() + float(seconds), 0
        while time.monotonic() < deadline:
            k += 1
            if role == "auto":
                _publish(root, model_dir, "auto", record)
            elif role == "distinct":
                _publish(root, model_dir, f"1.{number}.{k}", record)
            elif role == "same":
                slot = int(time.time() / SLOT_S) + 1
                time.sleep(max(0.0, slot * SLOT_S - time.time()))
                _publish(root, model_dir, f"2.0.{slot % 10**8}", record)
            elif role == "pull":
                _pull(root, work / "pulls" / "dst", record)
            else:
                raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(*sys.argv[1:6])
