"""The steps' Markdown, for the KFP UI (a ``Markdown`` output artifact renders in the step's Visualizations
tab; the JSON reports stay the record): the preflight checks, the DCRS, compression and evaluation reports,
and why the gate refused promotion.

    text = dcrs_markdown(read_json("dcrs/report.json"))
    text = compression_markdown(read_json("compress/report.json"))
    text = rejection_markdown(explain_settings(config), read_json("gate.json"), metrics)
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

from twt.method.metrics_markdown import markdown_cell, metrics_table
from twt.steps.settings import ExplainSettings

COUNT_COLUMNS = ("in", "rejected_quality", "rejected_diversity", "kept")


def _row(name: str, counts: Mapping) -> str:
    return "| " + " | ".join([markdown_cell(name), *(str(counts.get(c, "")) for c in COUNT_COLUMNS)]) + " |"


def _reasons(counts: Mapping) -> list[str]:
    found = {**counts.get("rejected_quality_reasons", {}), **counts.get("rejected_diversity_reasons", {})}
    return [f"- {markdown_cell(reason)}: {n}" for reason, n in found.items() if n]


def dcrs_markdown(report: Mapping) -> str:
    """The candidates kept and rejected (by quality, by diversity), overall and per teacher, with the
    reasons and the thresholds."""
    lines = ["# DCRS: candidates kept and rejected", "", "| teacher | in | rejected (quality) |"]
    lines[-1] += " rejected (diversity) | kept |"
    lines += ["|---|---|---|---|---|"]
    lines += [_row(name, counts) for name, counts in report.get("teachers", {}).items()]
    lines += [_row("all", report["candidates"])]
    reasons = _reasons(report["candidates"])
    if reasons:
        lines += ["", "## Reasons", "", *reasons]
    questions = report.get("questions", {})
    if questions:
        kept = f"Questions with a kept candidate: {questions.get('with_kept')} of {questions.get('total')}."
        lines += ["", kept]
    thresholds = report.get("thresholds") or {}
    if thresholds:
        lines += ["", "Thresholds: " + ", ".join(f"{k} {v}" for k, v in thresholds.items()) + "."]
    return "\n".join(lines) + "\n"


def compression_markdown(report: Mapping) -> str:
    """How the stage-2 reasoning was compressed: method, rows and lengths in and out, ratio, rejections."""
    ratio = report.get("achieved_ratio")
    lines = [
        f"# Compression: {markdown_cell(report.get('method'))}",
        "",
        "| | in | out |",
        "|---|---|---|",
        f"| rows | {report.get('rows_in')} | {report.get('rows_out')} |",
        f"| length ({markdown_cell(report.get('unit', 'tokens'))}) | {report.get('length_in')} | "
        f"{report.get('length_out')} |",
        "",
        f"Achieved ratio: {'n/a' if ratio is None else f'{ratio:.3f}'}"
        + (f" (target {report['target_ratio']})." if report.get("target_ratio") is not None else "."),
    ]
    rejected = {k: n for k, n in (report.get("rejected") or {}).items() if n}
    if rejected:
        lines += ["", "## Rejected", ""]
        lines += [f"- {markdown_cell(reason)}: {n}" for reason, n in rejected.items()]
    return "\n".join(lines) + "\n"


def plot_data_uri(png: str | os.PathLike) -> str:
    """A PNG as a ``data:`` URI, so a Markdown artifact shows the picture without a second file."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def evaluation_markdown(metrics: Mapping, eval_dir: Path, verdict: Mapping | None, embed_plot: bool) -> str:
    """The evaluation report: the metrics table, the gate's verdict and the accuracy-vs-tokens picture
    (embedded as a data URI, or linked beside the report)."""
    from twt.method.evaluate import PLOT_NAME
    from twt.method.metrics_markdown import render_report

    plot = eval_dir / PLOT_NAME
    link = (plot_data_uri(plot) if embed_plot else PLOT_NAME) if plot.is_file() else None
    return render_report(metrics, link, verdict)


def preflight_markdown(
    problems: list[str], buckets: list[str], teachers: list[str], cluster: Mapping[str, str] | None
) -> str:
    """The preflight checks (``twt.steps.preflight``): the problems found, the buckets and HTTP teachers
    checked, and in a cluster its namespace, model cache claim and training engine (None: not in one)."""
    lines = ["# Preflight", ""]
    lines += [f"- FAILED: {p}" for p in problems] or ["All checks passed."]
    lines += ["", f"- buckets: {', '.join(buckets) or 'none (no s3:// URI)'}"]
    lines += [f"- HTTP teachers: {', '.join(teachers) or 'none'}"]
    if cluster is None:
        lines += ["- Kubernetes checks (model cache, training-job API): skipped, not in a cluster"]
    else:
        lines += [f"- namespace {cluster['namespace']}; model cache {cluster['model cache']}"]
        lines += [f"- training: {cluster['training']}"]
    return "\n".join(lines) + "\n"


def rejection_markdown(settings: ExplainSettings, verdict: Mapping, metrics: Mapping) -> str:
    """Why the gate refused promotion: its reasons, the policy, the per-student checks and the evaluation
    table (``metrics``: the evaluation's ``metrics.json``)."""
    state = "passed" if verdict["passed"] else "did not pass"
    lines = [
        f"# Not promoted: the gate {state}" if not verdict["passed"] else "# Promotion was possible",
        "",
        f"Run `{settings.run}`; candidate student: {verdict['student'] or 'none qualified'}.",
        "",
        "## Why",
        "",
        *[f"- {reason}" for reason in verdict["reasons"]],
        "",
        "## The policy (configuration `gate`)",
        "",
        *[f"- `{key}`: {value}" for key, value in settings.gate.model_dump().items()],
    ]
    checked = verdict.get("checked") or {}
    if checked:
        lines += ["", "## Each student", "", "| student | accuracy rules | token reduction | reasons |"]
        lines += ["|---|---|---|---|"]
        for name, check in checked.items():
            reduction = {True: "pass", False: "fail"}.get(check.get("reduction_ok"), "not checked")
            accuracy = "pass" if check.get("accuracy_ok") else "fail"
            lines.append(f"| {name} | {accuracy} | {reduction} | {'; '.join(check.get('reasons', []))} |")
    lines += ["", "## Evaluation", "", metrics_table(metrics["models"]), ""]
    return "\n".join(lines)
