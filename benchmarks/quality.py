"""The results table: does the method keep stage 1's accuracy with a fraction of its tokens, against the
papers' baselines, measured by paired per-question statistics?

    python benchmarks/quality.py                            # CPU scale, 5 seeds, 2 at once (~75 min here)
    python benchmarks/quality.py --scale smoke --seeds 0 1  # a minutes-long check of the whole script
    python benchmarks/quality.py --plot-only                # redraw the picture from results/quality.json

Everything starts from the embedded task and the tiny models of configs/demo.yaml (``twt task build``):
three teachers with their own verbose styles and error slices, a student base that knows single-operation
facts. The held-out set is stratified by chain length (``SCALES[...]["eval"]`` questions, the task's
weights). Seed-independent: the teachers' and the base student's greedy evaluation. Per seed (the seed
drives the teachers' sampling and every training run's data order): sampling, DCRS (the teachers' vote
labels the questions, ``use_gold: false``), and these students, each evaluated greedily:

  TwT stage 1 (full reasoning)       the DCRS rows, from the student base
  answer-only SFT                    the base trained on the teachers' answers alone (stage 1's updates)
  direct deletion                    stage 1 → answer only (stages 2 + 3's updates): no compressed stage
  TwT stage 2 (teacher-guided)       teacher-large rewrites each reasoning for the stage-1 student's attempt
  TwT final (stage 3)                answer only, from stage 2
  stage 2, truncation                the first tokens of each reasoning, as many as teacher-guided keeps
  stage 2, CTS α=0.4 / unconditional selection α=0.4   the stage-1 student as the scoring model
  ablation: one teacher / no DCRS    stage 1 on teacher-large's DCRS rows / on every candidate with an answer

Every comparison (``COMPARISONS``) pairs the two students' answers question by question on the seeds both
ran (``stats.paired_bootstrap``: a two-level bootstrap over seeds and questions, McNemar per seed) and Holm's
correction runs across the table (``stats.holm``). A goal is met when the mean reaches its margin and the
difference is clear after correction (the stage-2 goal: its interval lies above −2 points). Budgets are
optimiser updates (``SCALES[...]["updates"]``: stages 1 / 2 / 3), chosen from the curves in RESULTS.md.

Writes ``benchmarks/results/quality.json`` (rows, comparisons, goals, dcrs), ``results/quality.png``
and the quality section of ``benchmarks/RESULTS.md`` (between its markers), with the machine and the commit.
Work files go to ``--workdir`` (default ``runs/quality``); a rerun resumes. The last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SCALES = {
    # train questions, eval questions (stratified), samples per teacher, optimiser updates of stages 1 / 2 / 3
    "smoke": {"train": 200, "eval": 100, "k": 1, "updates": (40, 20, 20)},
    # the slow test's main path (tests/test_method_works.py): a few minutes on 2 cores
    "ci": {"train": 300, "eval": 200, "k": 1, "updates": (600, 200, 100)},
    "cpu": {"train": 2000, "eval": 1200, "k": 2, "updates": (1500, 400, 600)},  # the demo's budgets
    "gpu": {"train": 20000, "eval": 4000, "k": 4, "updates": (4000, 2000, 2000)},
}
RATIO = 0.4  # CTS against unconditional selection, the CTS paper's ablation
BASE = "student base (solve)"
STAGE1 = "TwT stage 1 (full reasoning)"
ANSWER_ONLY = "answer-only SFT"
DELETION = "direct deletion (stage 1 → answer only)"
STAGE2 = "TwT stage 2 (teacher-guided)"
FINAL = "TwT final (stage 3)"
TRUNCATION = "stage 2, fixed-length truncation (teacher-guided's length)"
CTS = f"stage 2, CTS α={RATIO}"
UNCONDITIONAL = f"stage 2, unconditional selection α={RATIO}"
ONE_TEACHER = "ablation: one teacher (stage 1)"
NO_DCRS = "ablation: no DCRS (stage 1)"
SHORT = ("1", "2")  # chains of 1-2 operations: where a reasoning-free student can beat the shortcut
# (label, a, b, margin, chain lengths or None for all): a − b in accuracy, the goal's margin in points;
# the stage-2 goal is non-inferiority (its interval above −2 points)
COMPARISONS = (
    ("stage 2 − stage 1", STAGE2, STAGE1, -0.02, None),
    ("final − answer-only", FINAL, ANSWER_ONLY, 0.05, None),
    ("final − answer-only, 1-2 ops", FINAL, ANSWER_ONLY, 0.10, SHORT),
    ("final − direct deletion", FINAL, DELETION, 0.03, None),
    ("DCRS − no DCRS (stage 1)", STAGE1, NO_DCRS, 0.015, None),
    ("several teachers − one (stage 1)", STAGE1, ONE_TEACHER, 0.01, None),
    (f"CTS − unconditional (α={RATIO})", CTS, UNCONDITIONAL, 0.05, None),
    ("teacher-guided − truncation (stage 2)", STAGE2, TRUNCATION, 0.0, None),
)
MARK_START, MARK_END = "<!-- quality:start -->", "<!-- quality:end -->"


def make_config(scale: str, seed: int):
    import yaml

    from twt.core.load import default_config_path, parse_config
    from twt.core.schema import STAGES

    s = SCALES[scale]
    data = yaml.safe_load(default_config_path().read_text())
    data["task"].update(train_questions=s["train"], eval_questions=s["eval"], seed=0)
    data["dcrs"]["use_gold"] = False  # TwT's unsupervised selection
    for teacher in data["teachers"]:
        teacher.update(k=s["k"], seed=seed)  # the seed varies the teachers' sampling too
    data["stages"]["common"].update(seed=seed, save_every=0)
    for n, updates in zip(STAGES, s["updates"], strict=True):
        data["stages"][f"stage{n}"]["updates"] = updates
    return parse_config(yaml.safe_dump(data), "quality", base_dir=default_config_path().parent)


# --- evaluation --------------------------------------------------------------------------------------------


def evaluate(eval_path: Path, name: str, model: str, instruction: str, out: Path) -> dict:
    """Greedy evaluation on the held-out questions: metrics, accuracy by chain length (``accuracy_by_ops``)
    and every question's right/wrong in the file's order (``correct``, for the paired tests)."""
    from twt.core.records import Question, read_rows
    from twt.core.schema import EvaluationConfig
    from twt.embedded.task import parse_question
    from twt.method.evaluate import EvalTarget, evaluate_model

    slug = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    done = out / "eval" / f"{slug}.json"
    if done.is_file():
        return json.loads(done.read_text())
    questions = list(read_rows(eval_path, Question))
    answers = done.with_suffix(".answers.jsonl")
    target = EvalTarget(name, model, instruction)
    budget = EvaluationConfig(max_new_tokens=128, batch_size=64)
    result = evaluate_model(target, questions, budget, answers_path=answers)
    right = {row["id"]: bool(row["correct"]) for row in map(json.loads, answers.open())}
    result["correct"] = [int(right[q.id]) for q in questions]
    result["ops"] = [len(parse_question(q.question)[1]) for q in questions]
    by_ops: dict[int, list[int]] = {}
    for correct, n in zip(result["correct"], result["ops"], strict=True):
        by_ops.setdefault(n, []).append(correct)
    result["accuracy_by_ops"] = {str(n): sum(c) / len(c) for n, c in sorted(by_ops.items())}
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result) + "\n")
    return result


def fixed_step(scale: str, work: Path) -> dict:
    """The seed-independent rows: each teacher solving, the student base answering and solving."""
    from twt.steps import workdir

    run = workdir.RunDir(make_config(scale, 0), work / "shared")
    workdir.prepare_questions(run)
    fixed = [("student base (direct)", run.config.student.model, "direct")]
    fixed += [(BASE, run.config.student.model, "solve")]
    fixed += [(f"{t.name} (teacher)", t.model, "solve") for t in run.config.teachers]
    return {
        name: evaluate(run.eval_questions, name, model, instruction, work / "shared")
        for name, model, instruction in fixed
    }


# --- one seed ----------------------------------------------------------------------------------------------


def seed_step(scale: str, seed: int, work: Path, main_only: bool = False) -> dict:
    """Every path of one seed (``main_only``: the student base, stages 1, 2 and 3 of the main path)."""
    import torch

    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    from twt.core.records import Candidate, DistillRow, read_rows, write_rows
    from twt.core.schema import CompressionConfig
    from twt.method.compress import run_compress
    from twt.method.dcrs import DCRSConfig, run_dcrs
    from twt.steps import steps, workdir
    from twt.training.sft import SFTConfig
    from twt.training.stages import run_stage

    config = make_config(scale, seed)
    out = work / f"seed-{seed}"
    run = workdir.RunDir(config, out)
    workdir.prepare_questions(run)
    files = workdir.sample_teachers(run, progress=False)
    workdir.select_candidates(run)
    dcrs = run.distill_rows
    one = out / "dcrs-one" / "distill.jsonl"  # teacher-large's candidates alone
    if not one.is_file() and not main_only:
        settings = DCRSConfig(**config.dcrs.model_dump())
        run_dcrs(
            run.train_questions,
            files[:1],
            one,
            one.with_name("report.json"),
            settings,
            cache_dir=run.embeddings,
        )
    everything = out / "no-dcrs" / "distill.jsonl"  # every candidate with an answer, right or wrong
    if not everything.is_file() and not main_only:
        questions = {q["id"]: q["question"] for q in map(json.loads, run.train_questions.open())}
        write_rows(
            everything,
            [
                DistillRow(
                    id=c.id,
                    question=questions[c.id],
                    reasoning=c.reasoning,
                    answer=c.answer,
                    source=f"{c.teacher}#{c.sample}",
                )
                for path in files
                for c in read_rows(path, Candidate)
                if c.answer is not None and c.reasoning
            ],
        )
    base = config.student.model

    def train(
        name: str, stage: int, rows: Path, parent, *, mix: bool = True, updates: int | None = None
    ) -> Path:
        model = out / name
        if not (model / "model.safetensors").is_file():
            settings = config.stage(stage)
            sft = SFTConfig.from_stage(settings, updates=updates or settings.updates)
            run_stage(
                stage,
                rows,
                parent,
                model,
                sft,
                mix_previous=settings.mix_previous if mix else 0.0,
                progress=False,
            )
        return model

    def compress(name: str, stage1: Path, method: str, ratio: float = RATIO) -> Path:
        target = out / "compress" / f"{name}.jsonl"
        if target.is_file():
            return target
        kwargs: dict = {"progress": False}
        if method == "teacher":
            compression = CompressionConfig(method="teacher")
            teacher = config.compression_teacher()
            attempts = steps.student_attempts(
                stage1, list(read_rows(dcrs, DistillRow)), teacher.max_new_tokens
            )
            kwargs |= {"teacher": teacher, "attempts": attempts}
        else:  # demo.yaml's compression is the teacher's: the token methods take the section's defaults
            compression = CompressionConfig(method=method, ratio=ratio)
            kwargs |= {"reference_model": str(stage1)}
        run_compress(dcrs, target, target.with_suffix(".report.json"), compression, **kwargs)
        return target

    results: dict[str, dict] = {}

    def score(label: str, model: Path) -> None:
        results[label] = evaluate(run.eval_questions, f"{label} (seed {seed})", str(model), "solve", out)

    stage1 = train("stage1", 1, dcrs, base)
    score(STAGE1, stage1)
    guided = compress("teacher", stage1, "teacher")
    stage2 = train("stage2-teacher", 2, guided, stage1)
    score(STAGE2, stage2)
    score(FINAL, train("stage3", 3, guided, stage2))
    if main_only:
        score(BASE, Path(base))
        return results
    score(ANSWER_ONLY, train("answer-only", 3, dcrs, base, mix=False, updates=config.stage(1).updates))
    later = config.stage(2).updates + config.stage(3).updates
    score(DELETION, train("deletion", 3, dcrs, stage1, mix=False, updates=later))
    # truncation keeps as many reasoning tokens as the teacher's rewrites have, in the student's tokenizer
    tokenizer = AutoTokenizer.from_pretrained(stage1)
    rows = list(read_rows(guided, DistillRow))
    n_in = sum(len(tokenizer(r.reasoning, add_special_tokens=False)["input_ids"]) for r in rows)
    n_out = sum(
        len(tokenizer(r.compressed_reasoning or "", add_special_tokens=False)["input_ids"]) for r in rows
    )
    truncated = compress("truncate", stage1, "truncate", ratio=round(n_out / n_in, 3))
    score(TRUNCATION, train("stage2-truncate", 2, truncated, stage1))
    score(CTS, train("stage2-cts", 2, compress("cts", stage1, "cts"), stage1))
    score(
        UNCONDITIONAL,
        train("stage2-unconditional", 2, compress("unconditional", stage1, "unconditional"), stage1),
    )
    score(ONE_TEACHER, train("one-teacher-stage1", 1, one, base))
    score(NO_DCRS, train("no-dcrs-stage1", 1, everything, base))
    results["_dcrs"] = {
        name: json.loads((out / name / "report.json").read_text()) for name in ("dcrs", "dcrs-one")
    }
    results["_guided_ratio"] = round(n_out / n_in, 4)
    return results


# --- the table ---------------------------------------------------------------------------------------------


def aggregate(fixed: dict, per_seed: dict[int, dict]) -> list[dict]:
    rows = [_row(name, [r], seeds=[]) for name, r in fixed.items()]
    labels = [k for k in next(iter(per_seed.values())) if not k.startswith("_")]
    for label in labels:
        rows.append(_row(label, [per_seed[s][label] for s in sorted(per_seed)], seeds=sorted(per_seed)))
    return rows


def comparisons(per_seed: dict[int, dict]) -> list[dict]:
    """The paired per-question tests of ``COMPARISONS``, with Holm's correction across them."""
    from stats import holm, paired_bootstrap

    def answers(name: str, seeds: list[int], lengths: tuple[str, ...] | None) -> dict[int, list[int]]:
        """Each seed's right/wrong per question, on the chains of ``lengths`` (None: all)."""
        rows = {s: per_seed[s][name] for s in seeds}
        return {
            s: [
                c for c, n in zip(r["correct"], r["ops"], strict=True) if lengths is None or str(n) in lengths
            ]
            for s, r in rows.items()
        }

    out = []
    for label, a, b, margin, lengths in COMPARISONS:
        seeds = [s for s, r in per_seed.items() if a in r and b in r]
        if not seeds:
            continue
        result = paired_bootstrap(answers(a, seeds, lengths), answers(b, seeds, lengths))
        out.append({"comparison": label, "a": a, "b": b, "margin": margin, **result})
    tested = holm(out)
    for c in tested:
        if c["margin"] < 0:  # non-inferiority: the whole interval above the margin
            c["goal_met"] = c["low"] is not None and c["low"] > c["margin"]
        else:
            c["goal_met"] = c["mean"] is not None and c["mean"] >= c["margin"] and c["clear"]
    return tested


def token_goals(rows: list[dict]) -> list[dict]:
    """Stage 2 at most half of stage 1's output tokens; tokens fall strictly stage 1 → 2 → 3."""
    by_name = {r["name"]: r for r in rows}
    if not all(n in by_name for n in (STAGE1, STAGE2, FINAL)):
        return []
    t1, t2, t3 = (by_name[n]["output_tokens_mean"] for n in (STAGE1, STAGE2, FINAL))
    return [
        {
            "goal": "stage 2 ≤ 50% of stage 1's output tokens",
            "value": f"{100 * t2 / t1:.0f}%",
            "met": t2 <= 0.5 * t1,
        },
        {
            "goal": "tokens fall strictly, stage 1 → 2 → 3",
            "value": f"{t1:.1f} → {t2:.1f} → {t3:.1f}",
            "met": t1 > t2 > t3,
        },
    ]


def dcrs_summary(per_seed: dict[int, dict]) -> dict:
    """Counts, pseudo-label accuracy and each teacher's answers and rejections, summed over seeds."""
    out: dict = {}
    for name in ("dcrs", "dcrs-one"):
        reports = [r["_dcrs"][name] for r in per_seed.values() if name in r.get("_dcrs", {})]
        if not reports:
            continue

        def total(key: str, reports: list[dict] = reports) -> int:
            return sum(rep["candidates"][key] for rep in reports)

        teachers: dict[str, dict] = {}
        for rep in reports:
            for teacher, counts in rep["teachers"].items():
                mine = teachers.setdefault(teacher, {})
                for key in (
                    "in",
                    "rejected_quality",
                    "rejected_diversity",
                    "kept",
                    "answers_graded",
                    "answers_right",
                ):
                    mine[key] = mine.get(key, 0) + counts.get(key, 0)
        out[name] = {
            "seeds": len(reports),
            "candidates": total("in"),
            "rejected_quality": total("rejected_quality"),
            "rejected_diversity": total("rejected_diversity"),
            "kept": total("kept"),
            "pseudo_label_accuracy": statistics.fmean(rep["pseudo_label"]["accuracy"] for rep in reports),
            "kept_accuracy": statistics.fmean(rep["pseudo_label"]["kept_accuracy"] for rep in reports),
            "teachers": teachers,
        }
    return out


def _row(name: str, results: list[dict], seeds: list[int]) -> dict:
    accuracy = [r["accuracy"] for r in results]
    per_correct = [r["tokens_per_correct"] for r in results if r["tokens_per_correct"] is not None]
    lengths = sorted({n for r in results for n in r.get("accuracy_by_ops", {})}, key=int)
    return {
        "name": name,
        "accuracy_mean": round(statistics.fmean(accuracy), 4),
        "accuracy_by_ops": {
            n: round(statistics.fmean(r["accuracy_by_ops"][n] for r in results), 4) for n in lengths
        },
        "accuracy_std": round(statistics.stdev(accuracy), 4) if len(accuracy) > 1 else 0.0,
        "output_tokens_mean": round(statistics.fmean(r["mean_output_tokens"] for r in results), 2),
        "tokens_per_correct_mean": round(statistics.fmean(per_correct), 2) if per_correct else None,
        "seeds": seeds,
        **({"same_rows_as": results[0]["same_rows_as"]} if results[0].get("same_rows_as") else {}),
    }


def markdown(rows: list[dict], meta: dict) -> str:
    from twt.embedded.task import shortcut_floor

    lengths = ("1", "2", "3", "4")
    floor = " / ".join(f"{100 * shortcut_floor(int(n)):.0f}" for n in lengths)
    lines = [
        MARK_START,
        "## Quality: accuracy against output tokens",
        "",
        f"`python benchmarks/quality.py --scale {meta['scale']}` — {meta['machine']}; "
        f"commit {meta['commit']}; "
        f"{meta['minutes']} minutes. {meta['eval']} held-out questions stratified by chain length, greedy; "
        f"seeds {meta['seeds']} (each seed: the teachers' sampling and every training run's data order). "
        "Accuracy: mean ± standard deviation over seeds; rows without a spread are seed-independent.",
        "",
        "| model | accuracy | output tokens | tokens per correct | by chain length: 1 / 2 / 3 / 4 ops |",
        "|---|---:|---:|---:|---:|",
        f"| *shortcut floor* (best guess from the last two operations) | | | | *{floor}* |",
    ]
    for r in rows:
        spread = f" ± {100 * r['accuracy_std']:.1f}" if r["seeds"] and len(r["seeds"]) > 1 else ""
        per_correct = f"{r['tokens_per_correct_mean']:.1f}" if r["tokens_per_correct_mean"] else "–"
        by_ops = " / ".join(f"{100 * v:.0f}" for v in r.get("accuracy_by_ops", {}).values()) or "–"
        lines.append(
            f"| {r['name']} | {100 * r['accuracy_mean']:.1f}{spread} | {r['output_tokens_mean']:.1f} | "
            f"{per_correct} | {by_ops} |"
        )
    lines += [
        "",
        "Paired per-question comparisons (accuracy points, a − b; 95% interval and p from a bootstrap over "
        "seeds and questions together; McNemar's exact p per seed; *clear*: Holm-adjusted p < 0.05 across "
        "the table; the goal is met when the mean reaches the margin and the difference is clear — for "
        "stage 2, when the interval lies above the margin):",
        "",
        "| comparison | mean | 95% interval | p | Holm p | McNemar p per seed | clear | goal | met |",
        "|---|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for c in meta.get("comparisons", []):
        interval = (
            f"[{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]" if c["low"] is not None else c.get("note", "–")
        )
        p = f"{c['p']:.4f}" if c["p"] is not None else "–"
        p_holm = f"{c['p_holm']:.4f}" if c.get("p_holm") is not None else "–"
        mcnemar = ", ".join(f"{x:.2g}" for x in c["mcnemar_p"]) or "–"
        goal = f"{'>' if c['margin'] < 0 else '≥'} {100 * c['margin']:+.1f}"
        lines.append(
            f"| {c['comparison']} | {100 * c['mean']:+.1f} | {interval} | {p} | {p_holm} | {mcnemar} | "
            f"{'yes' if c['clear'] else 'no'} | {goal} | {'**met**' if c['goal_met'] else 'missed'} |"
        )
    for g in meta.get("token_goals", []):
        lines.append(f"| {g['goal']} | {g['value']} | | | | | | | {'**met**' if g['met'] else 'missed'} |")
    for name, d in meta.get("dcrs", {}).items():
        lines += [
            "",
            f"DCRS ({name}; {'all teachers' if name == 'dcrs' else 'teacher-large alone'}), summed over "
            f"{d['seeds']} seeds: {d['candidates']} candidates in, {d['rejected_quality']} rejected by "
            f"quality, {d['rejected_diversity']} by diversity, {d['kept']} kept; pseudo-labels "
            f"{100 * d['pseudo_label_accuracy']:.1f}% right, kept rows "
            f"{100 * d['kept_accuracy']:.1f}% right.",
            "",
            "| teacher | candidates | its answers right | rejected by quality | by diversity | kept |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for teacher, t in d["teachers"].items():
            right = (
                f"{100 * t['answers_right'] / t['answers_graded']:.1f}%" if t.get("answers_graded") else "–"
            )
            lines.append(
                f"| {teacher} | {t['in']} | {right} | {t['rejected_quality']} | {t['rejected_diversity']} "
                f"| {t['kept']} |"
            )
    lines += ["", "![accuracy against output tokens](results/quality.png)", MARK_END]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    """Every row's accuracy (± sd over seeds) against its output tokens, numbered, with the key below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 9), dpi=110)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1.1))
    ax, key = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    styles = {"teacher": ("tab:blue", "s"), "baseline": ("tab:gray", "D"), "student": ("tab:red", "o")}

    def role(row: dict) -> str:
        if not row["seeds"]:
            return "teacher" if "(teacher)" in row["name"] else "baseline"
        return "student" if row["name"].startswith("TwT") else "baseline"

    lines = []
    for n, row in enumerate(rows, 1):
        x, y = row["output_tokens_mean"], 100 * row["accuracy_mean"]
        color, marker = styles[role(row)]
        ax.errorbar(
            [x], [y], yerr=[100 * row["accuracy_std"]], color=color, marker=marker, ms=6, capsize=3, lw=1
        )
        ax.annotate(str(n), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
        lines.append(f"{n:>2}  {row['name'][:46]:<46} {y:5.1f}%  {x:5.1f} tok")
    for name, (color, marker) in styles.items():
        ax.scatter(
            [], [], color=color, marker=marker, label=name if name != "baseline" else "baseline / ablation"
        )
    ax.set_xlabel("mean output tokens per answer (fewer is better)")
    ax.set_ylabel("accuracy, % (higher is better; bars: ± sd over seeds)")
    ax.set_ylim(-2, 108)
    ax.set_xlim(0, 1.1 * max(r["output_tokens_mean"] for r in rows))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Accuracy against output tokens (held-out)")
    key.axis("off")
    half = (len(lines) + 1) // 2
    for column, chunk in enumerate((lines[:half], lines[half:])):
        key.text(0.5 * column, 1, "\n".join(chunk), va="top", ha="left", family="monospace", fontsize=7.5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_results(rows: list[dict], meta: dict) -> None:
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    extra = {k: meta[k] for k in ("comparisons", "token_goals", "dcrs", "guided_ratio") if k in meta}
    (results / "quality.json").write_text(
        json.dumps({"rows": rows, **extra}, indent=2, ensure_ascii=False) + "\n"
    )
    plot(rows, results / "quality.png")
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = markdown(rows, meta)
    if MARK_START in text:
        text = text[: text.index(MARK_START)] + section + text[text.index(MARK_END) + len(MARK_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=tuple(SCALES), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained at once, one torch thread each")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw quality.png from results/quality.json"
    )
    args = parser.parse_args()
    if args.plot_only:
        saved = json.loads((ROOT / "benchmarks" / "results" / "quality.json").read_text())
        print(plot(saved["rows"], ROOT / "benchmarks" / "results" / "quality.png"))
        return
    if len(args.seeds) < 2:
        print(
            "one seed: no interval can be computed, and no difference will be called clear", file=sys.stderr
        )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    work = args.workdir / args.scale
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {seed: pool.submit(seed_step, args.scale, seed, work) for seed in args.seeds}
        fixed_future = pool.submit(fixed_step, args.scale, work)  # the seed-independent rows, last
        per_seed = {seed: future.result() for seed, future in futures.items()}
        fixed = fixed_future.result()
    rows = aggregate(fixed, per_seed)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    meta = {
        "scale": args.scale,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "commit": commit.stdout.strip() or "unknown",
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "eval": SCALES[args.scale]["eval"],
        "seeds": args.seeds,
        "comparisons": comparisons(per_seed),
        "token_goals": token_goals(rows),
        "dcrs": dcrs_summary(per_seed),
        "guided_ratio": [per_seed[s].get("_guided_ratio") for s in sorted(per_seed)],
    }
    if not args.no_write:
        write_results(rows, meta)
    for r in rows:
        print(f"{r['name']:<62} {100 * r['accuracy_mean']:6.1f}  {r['output_tokens_mean']:6.1f}")
    for c in meta["comparisons"]:
        print(f"{c['comparison']:<45} {100 * c['mean']:+6.1f}  clear={c['clear']}  goal_met={c['goal_met']}")
    print(
        json.dumps(
            {"benchmark": "quality", **{k: v for k, v in meta.items() if k != "dcrs"}}, ensure_ascii=False
        )
    )


if __name__ == "__main__":
    main()
