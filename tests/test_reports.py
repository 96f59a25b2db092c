"""The DCRS and compression summaries that the KFP UI renders (twt.steps.reports), from made-up reports shaped
like twt.method.dcrs's and twt.method.compress's."""

from __future__ import annotations

from twt.steps.reports import compression_markdown, dcrs_markdown


def _counts(n_in: int, quality: int, diversity: int) -> dict:
    return {
        "in": n_in,
        "rejected_quality": quality,
        "rejected_quality_reasons": {"wrong_answer": quality, "no_answer": 0},
        "rejected_diversity": diversity,
        "rejected_diversity_reasons": {"near_duplicate": diversity},
        "kept": n_in - quality - diversity,
    }


def test_the_dcrs_summary_accounts_for_every_candidate_per_teacher() -> None:
    report = {
        "candidates": _counts(24, 5, 3),
        "teachers": {"teacher|large": _counts(12, 1, 2), "teacher-noisy": _counts(12, 4, 1)},
        "questions": {"total": 12, "with_kept": 11},
        "thresholds": {"quality": 0.5, "similarity": 0.9},
    }
    lines = dcrs_markdown(report).splitlines()
    assert lines[0] == "# DCRS: candidates kept and rejected"
    assert "| teacher\\|large | 12 | 1 | 2 | 9 |" in lines  # a pipe in a name stays inside its cell
    assert "| teacher-noisy | 12 | 4 | 1 | 7 |" in lines and "| all | 24 | 5 | 3 | 16 |" in lines
    assert "- wrong_answer: 5" in lines and "- near_duplicate: 3" in lines and "- no_answer: 0" not in lines
    assert "Questions with a kept candidate: 11 of 12." in lines
    assert "Thresholds: quality 0.5, similarity 0.9." in lines


def test_the_compression_summary_gives_lengths_ratio_and_rejections() -> None:
    report = {"method": "teacher", "rows_in": 22, "rows_out": 22, "unit": "tokens", "length_in": 442,
              "length_out": 383, "achieved_ratio": 0.866516, "target_ratio": None,
              "rejected": {"answer_changed": 2, "longer": 0}}  # fmt: skip
    lines = compression_markdown(report).splitlines()
    assert lines[0] == "# Compression: teacher"
    assert "| rows | 22 | 22 |" in lines and "| length (tokens) | 442 | 383 |" in lines
    assert "Achieved ratio: 0.867." in lines
    assert "- answer_changed: 2" in lines and not any("longer" in line for line in lines)
    cts = compression_markdown({**report, "method": "cts", "target_ratio": 0.5, "rejected": {}})
    assert "Achieved ratio: 0.867 (target 0.5)." in cts and "Rejected" not in cts
