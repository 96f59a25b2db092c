"""The quality benchmark's reporting (benchmarks/quality.py): aggregation over seeds, paired comparisons,
stepwise curves, the Markdown section and the picture, from made-up per-seed results (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402


def _result(accuracy: float, tokens: float, **extra) -> dict:
    return {
        "accuracy": accuracy,
        "mean_output_tokens": tokens,
        "tokens_per_correct": tokens / accuracy,
        "accuracy_by_ops": {"1": accuracy, "2": accuracy / 2},
        **extra,
    }


def _per_seed() -> dict[int, dict]:
    out = {}
    for seed, bump in enumerate((0.0, 0.02, 0.04)):
        phases = [
            {"phase": p, "kept_tokens_mean": k, "accuracy": a + bump, "mean_output_tokens": t, "updates": 100}
            for p, k, a, t in ((1, 10.0, 0.5, 15.0), (2, 0.0, 0.3, 5.0))
        ]
        final = _result(0.30 + bump, 5.0)
        out[seed] = {
            quality.ANSWER_ONLY: _result(0.25 + bump / 2, 5.0),
            quality.FINAL: final,
            "TwT stepwise (left, final)": _result(0.35 + bump, 5.0, phases=phases),
            "ablation: gold-label DCRS (stage 3)": {**final, "same_rows_as": quality.FINAL},
        }
    return out


def test_rows_comparisons_curves_and_the_section(tmp_path: Path) -> None:
    per_seed = _per_seed()
    rows = quality.aggregate({"teacher-large": _result(1.0, 21.5)}, per_seed)
    by_name = {r["name"]: r for r in rows}
    assert by_name[quality.FINAL]["accuracy_mean"] == 0.32 and by_name[quality.FINAL]["seeds"] == [0, 1, 2]
    assert by_name["teacher-large"]["seeds"] == [] and by_name["teacher-large"]["accuracy_std"] == 0.0
    assert by_name["ablation: gold-label DCRS (stage 3)"]["same_rows_as"] == quality.FINAL

    comparisons = {c["comparison"]: c for c in quality.comparisons(per_seed)}
    final_vs_answer_only = comparisons[f"{quality.FINAL} − {quality.ANSWER_ONLY}"]
    assert [round(d, 4) for d in final_vs_answer_only["differences"]] == [0.05, 0.06, 0.07]
    assert final_vs_answer_only["clear"]  # +5, +6, +7 points: the interval excludes 0
    assert "unsupervised − gold DCRS (stage 3)" not in comparisons  # the same students: nothing to compare

    curves = quality.phase_curves(per_seed)
    assert [p["accuracy_mean"] for p in curves["TwT stepwise (left, final)"]] == [0.52, 0.32]

    meta = {"scale": "cpu", "machine": "m", "commit": "c", "minutes": 1.0, "eval": 300, "seeds": [0, 1, 2]}
    section = quality.markdown(rows, {**meta, "comparisons": list(comparisons.values()), "curves": curves})
    assert section.startswith(quality.MARK_START) and section.endswith(quality.MARK_END)
    assert f"| {quality.FINAL} | 32.0 ± 2.0 | 5.0 |" in section
    assert f"ablation: gold-label DCRS (stage 3) — the same rows as {quality.FINAL}, so its result" in section
    assert "| 1 | 100 | 10.0 | 52.0 | 15.0 |" in section  # the stepwise curve, phase by phase

    picture = quality.plot(rows, curves, tmp_path / "quality.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
