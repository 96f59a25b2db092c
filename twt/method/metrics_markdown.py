"""The evaluation's metrics in Markdown: the table of evaluated models (the run report, the console, the model
card) and the report beside the metrics. No model code, so the registry and reports import it cheaply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# the columns of every metrics table, in order: (header, key, format); a column shows when any row has it
COLUMNS = (
    ("role", "role", str),
    ("accuracy", "accuracy", lambda x: f"{100 * x:.1f}%"),
    ("mean output tokens", "mean_output_tokens", "{:.1f}".format),
    ("p50", "p50_output_tokens", "{:.0f}".format),
    ("p95", "p95_output_tokens", "{:.0f}".format),
    ("tokens per correct", "tokens_per_correct", "{:.1f}".format),
    ("no answer", "no_answer", str),
    ("s/question", "seconds_per_question", "{:.4f}".format),
)


ROLE_ORDER = {"student": 0, "baseline": 1, "teacher": 2}


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def markdown_cell(x) -> str:
    """``x`` as one Markdown table cell or list item: pipes escaped, on one line."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def metrics_table(
    results: Mapping[str, Mapping],
    *,
    chosen: str | None = None,
    missing: str = "–",
    always: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> str:
    """The Markdown table of evaluated models (the run report, the console and the model card use it).

    ``results``: name → numbers, as ``evaluate_models`` writes them (any subset of ``COLUMNS``' keys). One
    row per model: ``chosen`` first, in bold and marked "(this model)", then students, baselines, teachers.
    A column shows when any row has it, or its key is in ``always`` (and, given ``only``, is in ``only``); a
    missing number reads ``missing``.
    Tokens per correct is derived (mean tokens ÷ accuracy) where it was not recorded and accuracy is above 0.
    """
    rows = []
    for key, numbers in results.items():
        row = dict(numbers)
        acc, tokens = row.get("accuracy"), row.get("mean_output_tokens")
        if row.get("tokens_per_correct") is None and _is_number(acc) and _is_number(tokens) and acc > 0:
            row["tokens_per_correct"] = tokens / acc
        rows.append((str(row.get("name", key)), row, chosen is not None and chosen in (key, row.get("name"))))
    rows.sort(key=lambda r: (not r[2], ROLE_ORDER.get(r[1].get("role"), 1)))
    columns = [c for c in COLUMNS if c[1] in always or any(c[1] in row for _, row, _ in rows)]
    if only is not None:
        columns = [c for c in columns if c[1] in only]
    lines = [
        "| model | " + " | ".join(header for header, _, _ in columns) + " |",
        "|---|" + "".join("---|" if key == "role" else "---:|" for _, key, _ in columns),
    ]
    for name, row, is_chosen in rows:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key)
            ok = isinstance(value, str) if key == "role" else _is_number(value)
            cells.append(markdown_cell(fmt(value)) if ok else missing)
        label = f"**{markdown_cell(name)}** (this model)" if is_chosen else markdown_cell(name)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_report(metrics: Mapping, plot: str | None = None, verdict: Mapping | None = None) -> str:
    """The Markdown report: the table, the picture and (when given) the gate's verdict."""
    parts = [
        "# Evaluation",
        "",
        f"{metrics['questions']} held-out questions, greedy decoding, at most {metrics['max_new_tokens']} "
        "new tokens. Tokens per correct = all output tokens ÷ correct answers.",
        "",
        metrics_table(metrics["models"]),
    ]
    if plot:
        parts += ["", f"![accuracy against output tokens]({plot})"]
    if verdict is not None:
        state = "PASSED" if verdict["passed"] else "FAILED"
        parts += [
            "",
            f"## Gate: {state}" + (f" — student {verdict['student']}" if verdict["student"] else ""),
        ]
        parts += [f"- {reason}" for reason in verdict["reasons"]]
    return "\n".join(parts) + "\n"
