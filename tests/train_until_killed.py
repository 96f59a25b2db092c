"""A training process for tests/test_checkpoints.py: trains, then hangs after update N until it is killed.

    python tests/train_until_killed.py SPEC_JSON MARKER_FILE HANG_AT

SPEC_JSON holds ``pairs``, ``base``, ``out`` and ``config`` (``twt.training.sft.SFTConfig`` fields). After
update ``HANG_AT`` (and its checkpoint) the process writes MARKER_FILE and sleeps: the test then SIGKILLs it,
as a node's preemption would.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from twt.training.sft import SFTConfig, train_sft


def main(spec_path: str, marker: str, hang_at: int) -> None:
    spec = json.loads(Path(spec_path).read_text())

    def hang(update: int) -> None:
        if update == hang_at:
            Path(marker).write_text(str(update))
            time.sleep(600)

    pairs = [tuple(p) for p in spec["pairs"]]
    train_sft(pairs, spec["base"], spec["out"], SFTConfig(**spec["config"]), progress=False, on_update=hang)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
