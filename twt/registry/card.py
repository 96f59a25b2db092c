"""The model card (``README.md``) of a published registry version, and the metric rows it and the Kubeflow
Model Registry record: rendered from whatever the version's metadata holds; a missing part reads
"not recorded".

    render_card(meta, files, "s3://twt-registry/twt-student/3")   # the card's Markdown
    metric_rows(metrics, gate)                                    # [(model, is_the_student, numbers), ...]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twt.core import store
from twt.method.metrics_markdown import markdown_cell, metrics_table

NOT_RECORDED = "not recorded"
METRIC_KEYS = ("accuracy", "mean_output_tokens", "tokens_per_correct")
CANDIDATES = ("stage3", "stage2", "stage1", "student")  # which row is the student when the gate does not say


def metric_rows(metrics: Any, gate: Any = None) -> list[tuple[str, bool, dict[str, Any]]]:
    """(name, is the published student, numbers) per evaluated model, the student first.

    ``metrics`` is ``{name: {"accuracy", "mean_output_tokens", "tokens_per_correct"?, ...}}`` (also under
    a ``"models"`` key, plus optional ``"baselines": {name: {...}}``), or one flat dict of numbers (the
    student).
    The student is ``gate["student"]``, else the first of stage3, stage2, stage1, student present.
    """
    if not isinstance(metrics, Mapping):
        return []
    source = metrics.get("models") if isinstance(metrics.get("models"), Mapping) else metrics
    rows = {str(k): dict(v) for k, v in source.items() if isinstance(v, Mapping) and k != "baselines"}
    if isinstance(source.get("baselines"), Mapping):
        rows.update({str(k): dict(v) for k, v in source["baselines"].items() if isinstance(v, Mapping)})
    rows = {k: v for k, v in rows.items() if any(m in v for m in METRIC_KEYS)}
    if not rows and any(m in metrics for m in METRIC_KEYS):
        rows = {"student": dict(metrics)}
    chosen = gate.get("student") if isinstance(gate, Mapping) else None
    if chosen not in rows:
        chosen = next((c for c in CANDIDATES if c in rows), None)
    ordered = sorted(rows.items(), key=lambda kv: kv[0] != chosen)  # stable: the rest keep their order
    return [(name, name == chosen, numbers) for name, numbers in ordered]


def _metrics_table(metrics: Any, gate: Any) -> str:
    rows = metric_rows(metrics, gate)
    if not rows:
        return NOT_RECORDED
    chosen = rows[0][0] if rows[0][1] else None  # metric_rows puts the published student first
    return metrics_table(
        {name: numbers for name, _, numbers in rows},
        chosen=chosen,
        missing=NOT_RECORDED,
        always=METRIC_KEYS,
        only=METRIC_KEYS,
    )


def _gate_section(gate: Any) -> str:
    if not isinstance(gate, Mapping):
        return NOT_RECORDED
    passed = gate.get("passed")
    verdict = "passed" if passed is True else "failed" if passed is False else NOT_RECORDED
    lines = [f"Verdict: **{verdict}**" + (f" (promoted: {gate['student']})" if gate.get("student") else "")]
    reasons = gate.get("reasons")
    reasons = [reasons] if isinstance(reasons, str) else reasons if isinstance(reasons, list) else []
    if reasons:
        lines += ["", *(f"- {markdown_cell(r)}" for r in reasons)]
    else:
        lines += ["", f"Reasons: {NOT_RECORDED}"]
    return "\n".join(lines)


def _base_model(lineage: Mapping[str, Any]) -> str:
    stages = lineage.get("stages")
    if isinstance(stages, list) and stages and isinstance(stages[0], Mapping) and stages[0].get("parent"):
        return str(stages[0]["parent"])  # twt.json's base_model is only the previous stage
    return str(lineage.get("student_base") or lineage.get("base_model") or NOT_RECORDED)


def _scalars(d: Any, keys: tuple[str, ...] | None = None) -> str:
    if not isinstance(d, Mapping):
        return NOT_RECORDED
    items = [(k, v) for k, v in d.items() if (keys is None or k in keys) and isinstance(v, (str, int, float))]
    return ", ".join(f"{k} {v}" for k, v in items) or NOT_RECORDED


def _lineage_section(lineage: Any) -> str:
    if not isinstance(lineage, Mapping):
        return NOT_RECORDED
    teachers = lineage.get("teachers")
    if isinstance(teachers, list):
        names = [t.get("name", "?") if isinstance(t, Mapping) else t for t in teachers]
        teachers = ", ".join(str(n) for n in names) or NOT_RECORDED
    elif isinstance(teachers, Mapping):
        teachers = ", ".join(str(n) for n in teachers) or NOT_RECORDED
    dcrs = lineage.get("dcrs") or lineage.get("dcrs_report")
    if isinstance(dcrs, Mapping) and isinstance(dcrs.get("candidates"), Mapping):
        dcrs = dcrs["candidates"]  # dcrs_report.json: overall counts under "candidates"
    counts = _scalars(dcrs, ("in", "kept", "rejected_quality", "rejected_diversity", "rows"))
    compression = lineage.get("compression")
    ratio_keys = ("method", "target_ratio", "ratio", "achieved_ratio", "rows_in", "rows_out")
    stages = lineage.get("stages")
    if isinstance(stages, list) and stages:
        stage_text = "; ".join(
            f"stage {s.get('stage', '?')} on {s.get('data', '?')} ({s.get('rows', '?')} rows)"
            if isinstance(s, Mapping)
            else str(s)
            for s in stages
        )
    else:
        stage_text = NOT_RECORDED
    run = lineage.get("pipeline_run_id") or lineage.get("run_id")
    lines = [
        f"- Base model: {markdown_cell(_base_model(lineage))}",
        f"- Teachers: {markdown_cell(teachers or NOT_RECORDED)}",
        f"- DCRS candidates: {markdown_cell(counts)}",
        f"- Compression: {markdown_cell(_scalars(compression, ratio_keys))}",
        f"- Stages: {markdown_cell(stage_text)}",
    ]
    return "\n".join(lines + ([f"- Pipeline run: {markdown_cell(run)}"] if run else []))


def render_card(
    meta: Mapping[str, Any],
    files: Mapping[str, store.FileEntry],
    uri: str,
    extra: Mapping[str, str] | str | None = None,
) -> str:
    """The README.md model card, from whatever ``meta`` holds; a missing part reads "not recorded"."""
    model, version = meta.get("model", "?"), meta.get("version", "?")
    lineage = meta.get("lineage") if isinstance(meta.get("lineage"), Mapping) else {}
    file_rows = [f"| `{markdown_cell(rel)}` | {e.size} | `{e.sha256}` |" for rel, e in sorted(files.items())]
    parts = [
        f"# {model} {version}",
        "",
        f"- Model: `{model}`",
        f"- Version: `{version}`",
        f"- Created: {meta.get('created') or NOT_RECORDED}",
        f"- Base model: {markdown_cell(_base_model(lineage))}",
        f"- Location: `{uri}`",
        "",
        "## Metrics",
        "",
        _metrics_table(meta.get("metrics"), meta.get("gate")),
        "",
        "## Gate",
        "",
        _gate_section(meta.get("gate")),
        "",
        "## Lineage",
        "",
        _lineage_section(meta.get("lineage")),
        "",
        "## How to pull",
        "",
        "```",
        f"twt registry pull {model}@{version} --to DIR",
        "```",
        "",
        "Every file is checked against its sha256 in `MANIFEST.json` (which also holds this card's).",
        "",
        "## Files",
        "",
        "| File | Bytes | sha256 |",
        "|---|---:|---|",
        *file_rows,
    ]
    if isinstance(extra, str):
        extra = {"Notes": extra}
    for title, text in (extra or {}).items():
        parts += ["", f"## {title}", "", str(text)]
    return "\n".join(parts) + "\n"
