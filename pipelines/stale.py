"""Is a committed or published ``twt-distillation`` spec stale? (CI: ``make spec-check``.)

    python -m pipelines stale [--image-registry REG] [--committed FILE] [--root URI]

Compiles this tree (deterministic: the same tree gives the same bytes) and compares it with a committed
spec file (``make spec-check``: ``pipelines/spec/twt-distillation.yaml``, which ``make spec`` rewrites) and/or
the version of this package version published in the pipeline registry. A published
version that differs means the pipeline changed without a version bump: published versions are immutable,
so bump ``version`` in pyproject.toml. Nothing published for this version yet is not stale.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from components.images import VERSION
from pipelines import release
from pipelines.release import ReleaseError


def check_stale(
    images: Mapping[str, str] | None = None,
    committed: str | os.PathLike | None = None,
    root: str | None = None,
) -> str:
    """One line saying what was compared; ``ReleaseError`` naming what is stale."""
    from pipelines.distillation import PIPELINE_NAME
    from twt.registry import pipelines as pipeline_registry

    with tempfile.TemporaryDirectory(prefix="twt-stale-") as scratch:
        fresh = release.compile_pipeline(Path(scratch) / "spec.yaml", images=images).read_bytes()
    digest = hashlib.sha256(fresh).hexdigest()
    said = [f"this tree compiles to sha256 {digest[:12]}"]
    if committed is not None:
        if not Path(committed).is_file():
            raise ReleaseError(
                f"{committed}: no committed spec there; write it with `make spec SPEC={committed}`"
            )
        if Path(committed).read_bytes() != fresh:
            raise ReleaseError(
                f"{committed} is stale: this tree compiles to another spec; rewrite it with `make spec "
                f"SPEC={committed}` (python -m pipelines compile --out {committed}) and commit it"
            )
        said.append(f"{committed} is current")
    if root:
        try:
            published = pipeline_registry.get_version(root, f"{PIPELINE_NAME}@{VERSION}")
        except pipeline_registry.VersionNotFoundError:
            said.append(f"{PIPELINE_NAME}@{VERSION} is not published yet")
        else:
            if published.sha256 != digest:
                raise ReleaseError(
                    f"{PIPELINE_NAME}@{VERSION} in {root} (sha256 {published.sha256[:12]}) differs from this "
                    f"tree ({digest[:12]}): the pipeline changed since it was published; bump the version in "
                    "pyproject.toml"
                )
            said.append(f"{PIPELINE_NAME}@{VERSION} in {root} is current")
    return "; ".join(said)
