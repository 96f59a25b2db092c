"""Training checkpoints on durable storage, so a retried step resumes where the killed one stopped.

    where = checkpoint_uri("s3://twt/runs", run="demo", run_id="3f2a", stage=1)   # s3://twt/runs/demo/3f2a/stage1
    store = CheckpointStore(where, fingerprint(config_dict, base, pairs, world=2))
    found = store.restore("scratch/resume")        # (step, local dir) of the newest good checkpoint, or None
    store.save(12, "scratch/step-12")              # files first, the manifest last
    store.prune(keep=2); store.finish(keep_last=False)

A checkpoint is one directory ``<where>/step-<n>/`` published through ``twt.core.store`` (a local or PVC path,
``file://`` or ``s3://``): every file goes up first and ``MANIFEST.json`` (sha256 of each file, the step and
the configuration's fingerprint) goes last, so a pod killed while saving leaves no manifest and the
half-written step is never resumed from. Restoring takes the newest step whose manifest carries this
run's fingerprint and whose files all match their sha256; a step without a manifest, with a corrupt one,
with bad bytes or from another configuration (other data, base model, settings or process count) is
skipped with a warning naming it, and never deleted: only this configuration's complete checkpoints are
pruned. The location derives from the run name, the run's id (a KFP retry runs in the same run) and the
stage, so the retried step looks exactly where its predecessor wrote.

On several nodes every node's first process uploads the files its node wrote (FSDP shards, random states)
and lists them in ``parts/node-<k>.json``; the global first process then publishes its own files with
those lists in the manifest's metadata, and a restore fetches them all, each checked against its sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from twt.core import store
from twt.core.records import read_json

STEP_DIR = re.compile(r"^step-(\d+)/" + re.escape(store.MANIFEST_NAME) + "$")
PARTS = "parts"


def checkpoint_uri(root: str, *, run: str, run_id: str | None, stage: int) -> str:
    """``<root>/<run>/<run_id>/stage<n>``: the same for a step and its retries, distinct across runs."""
    safe_id = re.sub(r"[^A-Za-z0-9._-]", "-", run_id or "local")
    return f"{root.rstrip('/')}/{run}/{safe_id}/stage{stage}"


def fingerprint(settings: Mapping, base_model: str | os.PathLike, pairs: Iterable, world: int) -> str:
    """A digest of everything that makes a checkpoint resumable by this run: settings, data, base, world."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    digest.update(str(base_model).encode())
    config_file = Path(base_model) / "config.json"
    if config_file.is_file():
        digest.update(config_file.read_bytes())
    for pair in pairs:
        digest.update(json.dumps(pair).encode())
    digest.update(f"world={world}".encode())
    return digest.hexdigest()[:32]


def _warn(message: str) -> None:
    print(f"twt: warning: {message}", file=sys.stderr, flush=True)


class CheckpointStore:
    """The checkpoints of one training run of one stage at ``uri``; see the module docstring."""

    def __init__(self, uri: str, fingerprint: str, *, warn: Callable[[str], None] = _warn) -> None:
        uri = uri.removeprefix("file://")
        self.uri = uri.rstrip("/") if "://" in uri else os.path.normpath(uri)
        self.fingerprint = fingerprint
        self.warn = warn
        self._warned: set[str] = set()

    def step_uri(self, step: int) -> str:
        return f"{self.uri}/step-{step}"

    def _once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(message)

    def published_steps(self) -> list[int]:
        """Steps that have a manifest, newest first (complete or not, ours or not)."""
        prefix = self.uri + "/"
        listed = [u[len(prefix) :] for u in store.list_uris(prefix) if u.startswith(prefix)]
        found = {int(m.group(1)) for rel in listed if (m := STEP_DIR.match(rel))}
        return sorted(found, reverse=True)

    def _manifest(self, step: int) -> store.Manifest | None:
        """This configuration's manifest of ``step``, or None (with a warning) for a foreign or bad one."""
        where = self.step_uri(step)
        try:
            manifest = store.read_manifest(where)
        except store.StoreError as err:
            self._once(where, f"skipping checkpoint {where}: unreadable manifest ({err}); left in place")
            return None
        theirs = manifest.metadata.get("fingerprint")
        if theirs != self.fingerprint:
            self._once(
                where,
                f"skipping checkpoint {where}: it belongs to another configuration (fingerprint {theirs}, "
                f"this run {self.fingerprint}); left in place",
            )
            return None
        return manifest

    def ours(self) -> list[int]:
        """This configuration's published steps, newest first."""
        return [s for s in self.published_steps() if self._manifest(s) is not None]

    def restore(self, dst: str | os.PathLike) -> tuple[int, Path] | None:
        """Fetch the newest good checkpoint into ``dst`` (replaced): (step, dst), or None if there is none."""
        dst = Path(dst)
        for step in self.published_steps():
            manifest = self._manifest(step)
            if manifest is None:
                continue
            shutil.rmtree(dst, ignore_errors=True)
            try:
                store.get_dir(self.step_uri(step), dst)
                for rel, sha in manifest.metadata.get("node_files", {}).items():
                    store.get_file(f"{self.step_uri(step)}/{rel}", dst / rel, sha256=sha)
            except store.StoreError as err:
                shutil.rmtree(dst, ignore_errors=True)
                where = self.step_uri(step)
                self._once(where, f"skipping checkpoint {where}: {err}; left in place")
                continue
            return step, dst
        return None

    def upload_node_part(self, step: int, staging: str | os.PathLike, node: int) -> None:
        """On node ``node`` > 0: upload what this node wrote and list it (before the manifest goes up)."""
        staging = Path(staging)
        listing = {}
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            rel = path.relative_to(staging).as_posix()
            listing[rel] = store.put_file(path, f"{self.step_uri(step)}/{rel}")
        with tempfile.TemporaryDirectory() as tmp:
            part = Path(tmp) / f"node-{node}.json"
            part.write_text(json.dumps(listing))
            store.put_file(part, f"{self.step_uri(step)}/{PARTS}/node-{node}.json")

    def save(self, step: int, staging: str | os.PathLike, nodes: int = 1) -> None:
        """Publish ``staging`` as step ``step`` (the global first process, after every node's part is up)."""
        node_files: dict[str, str] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for node in range(1, nodes):
                part = Path(tmp) / f"node-{node}.json"
                store.get_file(f"{self.step_uri(step)}/{PARTS}/node-{node}.json", part)
                node_files.update(read_json(part, "checkpoint part list", dict))
        metadata = {"step": step, "fingerprint": self.fingerprint, "node_files": node_files}
        store.publish_dir(staging, self.step_uri(step), metadata=metadata, overwrite=True)

    def prune(self, keep: int = 2) -> None:
        """Delete this configuration's checkpoints but the newest ``keep``; others' stay."""
        for step in self.ours()[keep:]:
            store.delete(self.step_uri(step))

    def finish(self, keep_last: bool) -> None:
        """At the end of the stage: keep only the newest checkpoint, or none."""
        self.prune(keep=1 if keep_last else 0)
        if "://" not in self.uri and os.path.isdir(self.uri) and not os.listdir(self.uri):
            os.rmdir(self.uri)  # an empty local directory is not worth keeping
