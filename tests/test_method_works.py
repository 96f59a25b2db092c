"""The method does something, measured by its own benchmark's main path on a small configuration (slow).

Runs ``benchmarks/quality.py``'s seed step at its "ci" scale (300 questions sampled by the three tiny
teachers, DCRS, stages 1-3, 200 stratified held-out questions): nothing here copies an earlier run's numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402
from stats import paired_bootstrap  # noqa: E402


@pytest.mark.slow
def test_distillation_beats_the_base_and_compression_cuts_tokens(tmp_path: Path) -> None:
    results = quality.seed_step("ci", 0, tmp_path, main_only=True)
    base, stage1, stage2, final = (
        results[name] for name in (quality.BASE, quality.STAGE1, quality.STAGE2, quality.FINAL)
    )
    print({name: (r["accuracy"], r["mean_output_tokens"]) for name, r in results.items()})
    # stage 1 beats the student base, question by question (McNemar's exact test on the discordant pairs)
    gain = paired_bootstrap({0: stage1["correct"]}, {0: base["correct"]})
    assert gain["mean"] > 0.05 and gain["mcnemar_p"][0] < 0.01, gain  # measured once: +16 points
    # stage 2's student writes fewer tokens than stage 1's, and the final student fewer still
    assert stage2["mean_output_tokens"] < 0.7 * stage1["mean_output_tokens"]
    assert final["mean_output_tokens"] < stage2["mean_output_tokens"]
