"""The quality benchmark's reporting (benchmarks/quality.py): aggregation over seeds, paired per-question
comparisons with Holm's correction, the goals, the Markdown section and the picture, from made-up per-seed
answers (no training)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402

OPS = [1] * 150 + [2] * 250 + [3] * 300 + [4] * 300  # 1,000 questions, stratified


def _result(correct: list[int], tokens: float) -> dict:
    accuracy = sum(correct) / len(correct)
    by_ops = {
        str(n): sum(c for c, o in zip(correct, OPS, strict=True) if o == n) / OPS.count(n)
        for n in (1, 2, 3, 4)
    }
    return {
        "accuracy": accuracy,
        "mean_output_tokens": tokens,
        "tokens_per_correct": tokens / accuracy,
        "accuracy_by_ops": by_ops,
        "correct": correct,
        "ops": OPS,
    }


def _answers(p_short: float, p_long: float, rng: random.Random) -> list[int]:
    return [int(rng.random() < (p_short if o <= 2 else p_long)) for o in OPS]


def _per_seed(seeds: int) -> dict[int, dict]:
    out = {}
    for seed in range(seeds):
        rng = random.Random(seed)
        stage1 = _answers(0.97, 0.95, rng)
        out[seed] = {
            quality.STAGE1: _result(stage1, 40.0),
            # stage 2 keeps stage 1's answers, bar 1% of them: non-inferior by the −2-point margin
            quality.STAGE2: _result([c if rng.random() > 0.01 else 0 for c in stage1], 18.0),
            quality.FINAL: _result(_answers(0.6, 0.3, rng), 3.0),
            quality.ANSWER_ONLY: _result(_answers(0.3, 0.28, rng), 3.0),
            quality.NO_DCRS: _result([c if rng.random() > 0.002 else 0 for c in stage1], 40.0),
        }
    return out


def test_rows_paired_comparisons_goals_and_the_section(tmp_path: Path) -> None:
    per_seed = _per_seed(5)
    teacher = _result([1] * 900 + [0] * 100, 45.0)
    rows = quality.aggregate({"teacher-large (teacher)": teacher}, per_seed)
    by_name = {r["name"]: r for r in rows}
    assert by_name[quality.STAGE1]["seeds"] == [0, 1, 2, 3, 4]
    assert (
        by_name["teacher-large (teacher)"]["seeds"] == []
        and by_name["teacher-large (teacher)"]["accuracy_std"] == 0
    )

    comparisons = {c["comparison"]: c for c in quality.comparisons(per_seed)}
    assert set(comparisons) == {
        "stage 2 − stage 1",
        "final − answer-only",
        "final − answer-only, 1-2 ops",
        "DCRS − no DCRS (stage 1)",
    }  # a comparison whose rows are missing is left out
    gain = comparisons["final − answer-only"]
    assert gain["clear"] and gain["goal_met"] and gain["low"] > 0.03  # ~+13 points, 5 seeds, 1,000 questions
    short = comparisons["final − answer-only, 1-2 ops"]
    assert 0.2 < short["mean"] < 0.4 and short["goal_met"]  # measured on the 400 short chains only
    assert comparisons["stage 2 − stage 1"]["goal_met"]  # −1 point, interval above −2
    tiny = comparisons["DCRS − no DCRS (stage 1)"]
    assert 0 < tiny["mean"] < 0.01 and not tiny["goal_met"]  # below the +1.5-point margin: missed
    assert tiny["p_holm"] >= tiny["p"]

    goals = {g["goal"]: g["met"] for g in quality.token_goals(rows)}
    assert goals == {
        "stage 2 ≤ 50% of stage 1's output tokens": True,
        "tokens fall strictly, stage 1 → 2 → 3": True,
    }

    meta = {
        "scale": "cpu",
        "machine": "m",
        "commit": "c",
        "minutes": 1.0,
        "eval": 1000,
        "seeds": [0, 1, 2, 3, 4],
    }
    section = quality.markdown(
        rows,
        {
            **meta,
            "comparisons": list(comparisons.values()),
            "token_goals": [
                {"goal": "stage 2 ≤ 50% of stage 1's output tokens", "value": "45%", "met": True}
            ],
        },
    )
    assert section.startswith(quality.MARK_START) and section.endswith(quality.MARK_END)
    assert (
        "| *shortcut floor* (best guess from the last two operations) | | | | *16 / 21 / 27 / 28* |"
        in section
    )
    assert f"| {quality.STAGE2} | " in section and "| DCRS − no DCRS (stage 1) | +0." in section
    assert "| missed |" in section and "| **met** |" in section

    picture = quality.plot(rows, tmp_path / "quality.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_seed_computes_no_interval_and_calls_nothing_clear() -> None:
    comparisons = quality.comparisons(_per_seed(1))
    assert comparisons and all(c["low"] is None and not c["clear"] and not c["goal_met"] for c in comparisons)
    assert all("no interval can be computed" in c["note"] for c in comparisons)
    section = quality.markdown(
        quality.aggregate({}, _per_seed(1)),
        {
            "scale": "cpu",
            "machine": "m",
            "commit": "c",
            "minutes": 1.0,
            "eval": 1000,
            "seeds": [0],
            "comparisons": comparisons,
        },
    )
    assert "fewer than 2 seeds: no interval can be computed" in section and "| yes |" not in section
