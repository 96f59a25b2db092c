"""The results table: accuracy and output tokens of the TwT student against its baselines and ablations.

    python benchmarks/quality.py                       # CPU scale, 3 seeds at once (< 60 min here)
    python benchmarks/quality.py --scale smoke --seeds 0   # a minutes-long check of the whole script
    python benchmarks/quality.py --scale gpu           # larger budget, for a GPU

Everything starts from the embedded task and the tiny models of configs/demo.yaml. Shared by all seeds (the
teachers are fixed, so their candidates are too): the questions, sampling, DCRS (all teachers, and
teacher-large alone for the one-teacher ablation), the teachers' and the base student's evaluation. Per seed
(the seed drives data order and mixing of every training run): stage 1 (full reasoning); answer-only SFT
(the base student trained on the teachers' answers alone); stage 2 on teacher-guided compression and on CTS
at α ∈ {0.5, 0.7, 0.9} and on the unconditional baseline at α = 0.5 (stage-1 student as the scoring model);
stage 3 from the teacher-guided stage 2 (the TwT final student); and the ablations — one teacher
(teacher-large) through all three stages, no DCRS (every candidate with an answer, right or wrong,
duplicates included) through all three stages, and stage 1 → stage 3 with no compressed stage. DCRS is
unsupervised (the teachers' vote labels the questions, ``use_gold: false``); gold-label DCRS is an ablation
through all three stages, and the table reports each DCRS run's pseudo-label accuracy against gold. An
ablation whose rows are byte for byte the main path's (gold agreeing with the vote on every question) would
train the same students with the same seed, so it takes the main path's result and its row says so.
CTS also runs with its own reference model (``twt.reference``: trained once, apart, on the answer-conditioned
DCRS rows, ``SCALES[...]["reference"]`` updates), exact top-α and windowed (segments of 8 tokens), then
stage 3. The stepwise schedules (``STEPWISE``, ``twt.internalize``: left-to-right removal of 6 tokens per
phase, and CTS ratio decay 0.75 → 0.5 → 0.25 → 0 scored by the own reference model) start from stage 1 and
share stages 2 + 3's updates equally among their phases; every phase is evaluated (the curves).
Differences between paths are paired across seeds (``COMPARISONS``, ``twt.compare``): one is called clear
only when its 95% interval excludes 0.

Budgets are optimiser updates, not epochs (``SCALES[...]["updates"]``: stages 1 / 2 / 3): answer-only pairs
pack a dozen to a row, so an epoch of them is a handful of updates, and equal epochs left stage 3 and the
answer-only baseline under-trained. Every stage of every path gets the same updates as the same stage of
TwT; answer-only SFT gets stage 1's (it had levelled off: 28.4% after 456 updates, 27.0% after 1,900 on
seed 0 of an earlier run); stage 1 → stage 3 gets stages 2 + 3's for its stage 3. Every row also reports
accuracy by chain length (1–4 operations): what a reasoning-free student can and cannot internalise.

Writes ``benchmarks/results/quality.json`` (``rows``: one object per row: name, accuracy_mean,
accuracy_std, output_tokens_mean, tokens_per_correct_mean, seeds; ``comparisons``, ``curves``, ``dcrs``),
``benchmarks/results/quality.png`` and the quality section of ``benchmarks/RESULTS.md`` (between its
markers), with the machine and the commit. Work files go to ``--workdir`` (default ``runs/quality``); a rerun
resumes. The last line printed is one JSON object.
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

SCALES = {
    # train questions, eval questions, samples per teacher, optimiser updates of stages 1 / 2 / 3, and of
    # CTS's own reference model (cpu: 12 epochs of stage 1, ~900 updates, left seeds at 31-78%; 2,000
    # updates gave 93-100% by length)
    "smoke": {"train": 200, "eval": 100, "k": 2, "updates": (40, 20, 20), "reference": 20},
    "cpu": {"train": 2000, "eval": 300, "k": 2, "updates": (2000, 500, 500), "reference": 1000},
    "gpu": {"train": 20000, "eval": 1000, "k": 4, "updates": (8000, 3000, 3000), "reference": 4000},
}
CTS_RATIOS = (0.5, 0.7, 0.9)
# stepwise schedules (twt.internalize) from the stage-1 student; their phases share stages 2 + 3's updates
STEPWISE = {"left": {"schedule": "left", "tokens_per_phase": 6}, "cts": {"schedule": "cts"}}
# paired comparisons across seeds (twt.compare): (label, a, b), a − b
FINAL = "TwT final (stage 3)"
ANSWER_ONLY = "answer-only SFT"
COMPARISONS = (
    (f"{FINAL} − {ANSWER_ONLY}", FINAL, ANSWER_ONLY),
    ("stepwise left − answer-only SFT", "TwT stepwise (left, final)", ANSWER_ONLY),
    ("stepwise cts − answer-only SFT", "TwT stepwise (CTS decay, final)", ANSWER_ONLY),
    (
        "stepwise left − stage 1 → 3 outright",
        "TwT stepwise (left, final)",
        "ablation: stage 1 → stage 3 (reasoning deleted outright)",
    ),
    ("stepwise left − TwT final", "TwT stepwise (left, final)", FINAL),
    (
        "CTS own reference − stage-1 reference (α=0.5, stage 2)",
        "TwT stage 2 (CTS α=0.5, own reference)",
        "TwT stage 2 (CTS α=0.5)",
    ),
    ("unsupervised − gold DCRS (stage 3)", FINAL, "ablation: gold-label DCRS (stage 3)"),
    ("several teachers − one (stage 3)", FINAL, "ablation: one teacher (stage 3)"),
    ("DCRS − no DCRS (stage 3)", FINAL, "ablation: no DCRS (stage 3)"),
)
MARK_START, MARK_END = "<!-- quality:start -->", "<!-- quality:end -->"


def make_config(scale: str, seed: int):
    import yaml

    from twt.config import default_config_path, parse_config

    s = SCALES[scale]
    data = yaml.safe_load(default_config_path().read_text())
    data["task"].update(train_questions=s["train"], eval_questions=s["eval"])
    data["dcrs"]["use_gold"] = False  # TwT's unsupervised selection; gold labels are an ablation here
    data["stages"]["stage2"]["mix_previous"] = data["stages"]["stage3"]["mix_previous"] = 0.2
    for teacher in data["teachers"]:
        teacher["k"] = s["k"]
    data["stages"]["common"].update(seed=seed, save_every=0)
    for n, updates in zip((1, 2, 3), s["updates"], strict=True):
        data["stages"][f"stage{n}"]["updates"] = updates
    return parse_config(yaml.safe_dump(data), "quality", base_dir=default_config_path().parent)


# --- shared work: questions, candidates, DCRS, fixed baselines ---------------------------------------------


def shared_step(scale: str, work: Path) -> dict:
    from twt import run as steps
    from twt.dcrs import DCRSConfig, run_dcrs
    from twt.records import Candidate, DistillRow, read_rows, write_rows

    run = steps.RunDir(make_config(scale, 0), work / "shared")
    steps.questions_step(run)
    files = steps.sample_step(run, progress=False)
    steps.dcrs_step(run)
    config = DCRSConfig(**run.config.dcrs.model_dump())
    for name, sources, settings in (
        ("dcrs-one", files[:1], config),
        ("dcrs-gold", files, DCRSConfig(**{**run.config.dcrs.model_dump(), "use_gold": True})),
    ):
        if not run.path(name, "distill.jsonl").is_file():
            run_dcrs(
                run.train_questions,
                sources,
                run.path(name, "distill.jsonl"),
                run.path(name, "report.json"),
                settings,
            )
    everything = run.path("no-dcrs", "distill.jsonl")
    if not everything.is_file():
        questions = {q["id"]: q["question"] for q in map(json.loads, run.train_questions.open())}
        rows = [
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
        ]
        write_rows(everything, rows)
    reference_step(scale, work)
    fixed = [("base student (direct)", run.config.student.model, "direct")]
    fixed += [(t.name, t.model, "solve") for t in run.config.teachers]
    return {
        name: evaluate(run, name, model, instruction, work / "shared") for name, model, instruction in fixed
    }


def reference_step(scale: str, work: Path) -> Path:
    """CTS's own reference model (``twt.reference``): trained once on the DCRS rows, shared by the seeds."""
    from twt.reference import ReferenceSettings, train_reference

    config = make_config(scale, 0)
    settings = ReferenceSettings(
        updates=SCALES[scale]["reference"], learning_rate=config.stage(1).learning_rate
    )
    dcrs = work / "shared" / "dcrs" / "distill.jsonl"
    return train_reference(
        dcrs, config.student.model, work / "shared" / "reference", settings, progress=False
    )


def dcrs_summary(work: Path) -> dict:
    """Counts and pseudo-label accuracy of each DCRS run of the benchmark."""
    out = {}
    for name in ("dcrs", "dcrs-gold", "dcrs-one"):
        path = work / "shared" / name / "report.json"
        if path.is_file():
            report = json.loads(path.read_text())
            out[name] = {
                "use_gold": report["config"]["use_gold"],
                "candidates": report["candidates"]["in"],
                "kept": report["candidates"]["kept"],
                "rejected_quality": report["candidates"]["rejected_quality_reasons"],
                "pseudo_label_accuracy": report["pseudo_label"]["accuracy"],
                "kept_accuracy": report["pseudo_label"].get("kept_accuracy"),
            }
    return out


def evaluate(run, name: str, model: str, instruction: str, out: Path) -> dict:
    """Greedy evaluation on the held-out questions, with accuracy by chain length (``accuracy_by_ops``)."""
    from twt.embedded_task import parse_question
    from twt.evaluate import EvalTarget, evaluate_model
    from twt.records import Question, read_rows

    slug = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    done = out / "eval" / f"{slug}.json"
    if done.is_file():
        return json.loads(done.read_text())
    questions = list(read_rows(run.eval_questions, Question))
    answers = done.with_suffix(".answers.jsonl")
    target = EvalTarget(name, model, instruction)
    result = evaluate_model(target, questions, max_new_tokens=96, batch_size=64, answers_path=answers)
    ops = {q.id: len(parse_question(q.question)[1]) for q in questions}
    by_ops: dict[int, list[bool]] = {}
    for row in map(json.loads, answers.open()):
        by_ops.setdefault(ops[row["id"]], []).append(row["correct"])
    result["accuracy_by_ops"] = {str(n): sum(c) / len(c) for n, c in sorted(by_ops.items())}
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


# --- one seed ----------------------------------------------------------------------------------------------


def seed_step(scale: str, seed: int, work: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    from twt import run as steps
    from twt.compress import run_compress
    from twt.internalize import run_internalize
    from twt.stages import run_stage
    from twt.teachers import TeacherSpec
    from twt.train import SFTConfig

    config = make_config(scale, seed)
    shared = work / "shared"
    run = steps.RunDir(config, shared)  # questions and candidates come from the shared directory
    out = work / f"seed-{seed}"
    base = config.student.model

    def train(
        name: str, stage: int, rows: Path, parent: str | Path, *, mix: bool = True, updates: int | None = None
    ) -> Path:
        """One training run of the scale's budget for ``stage`` (or ``updates``)."""
        model = out / name
        if not (model / "model.safetensors").is_file():
            settings = config.stage(stage)
            sft = SFTConfig.from_stage(settings, updates=updates or settings.updates)
            mix_previous = settings.mix_previous if mix else 0.0
            run_stage(stage, rows, parent, model, sft, mix_previous=mix_previous, progress=False)
        return model

    def compress(
        name: str, rows: Path, stage1: Path, method: str, ratio: float = 0.5, selection: str = "exact"
    ) -> Path:
        target = out / "compress" / f"{name}.jsonl"
        if target.is_file():
            return target
        kwargs: dict = {"method": method, "progress": False}
        if method == "teacher":
            from twt import tasks
            from twt.records import DistillRow, read_rows

            teacher = TeacherSpec.from_mapping(config.compression_teacher())
            attempts = tasks.student_attempts(
                stage1, list(read_rows(rows, DistillRow)), teacher.max_new_tokens
            )
            kwargs |= {"teacher": teacher, "attempts": attempts}
        else:
            kwargs |= {
                "reference_model": str(stage1),
                "ratio": ratio,
                "window": config.compression.window,
                "selection": selection,
                "segment": 8,
            }
        run_compress(rows, target, target.with_suffix(".report.json"), **kwargs)
        return target

    results: dict[str, dict] = {}

    def score(label: str, model: Path) -> None:
        results[label] = evaluate(run, f"{label} (seed {seed})", str(model), "solve", out)

    def stepwise(name: str, schedule: dict, rows: Path, stage1: Path, reference: Path, budget: int) -> dict:
        """A stepwise schedule whose phases share ``budget`` updates; every phase evaluated (a curve)."""
        from transformers import AutoTokenizer

        from twt.internalize import Schedule, n_phases
        from twt.records import DistillRow, read_rows

        shape = Schedule(**schedule)
        tokenizer = AutoTokenizer.from_pretrained(stage1)
        lengths = [
            len(tokenizer(r.reasoning, add_special_tokens=False)["input_ids"])
            for r in read_rows(rows, DistillRow)
        ]
        per_phase = max(1, budget // n_phases(lengths, shape))
        settings = Schedule(**schedule, updates_per_phase=per_phase, seed=seed)
        summary = run_internalize(
            rows,
            stage1,
            out / f"stepwise-{name}",
            settings,
            SFTConfig.from_stage(config.stage(2)),
            reference_model=str(reference),
            evaluate=lambda m: evaluate(run, f"stepwise {name} {m.name} (seed {seed})", str(m), "solve", out),
            progress=False,
        )
        final = dict(summary["phases"][-1]["evaluation"])
        final["phases"] = [
            {
                "phase": p["phase"],
                "kept_tokens_mean": p["kept_tokens_mean"],
                "accuracy": p["evaluation"]["accuracy"],
                "mean_output_tokens": p["evaluation"]["mean_output_tokens"],
                "updates": p["training"]["updates"],
            }
            for p in summary["phases"]
        ]
        return final

    dcrs = shared / "dcrs" / "distill.jsonl"
    stage1 = train("stage1", 1, dcrs, base)
    score("full reasoning (stage 1)", stage1)
    # the teachers' answers alone, one pair per question, with stage 1's updates
    score("answer-only SFT", train("answer-only", 3, dcrs, base, mix=False, updates=config.stage(1).updates))
    later = config.stage(2).updates + config.stage(3).updates  # what stages 2 and 3 get on the staged path
    score(
        "ablation: stage 1 → stage 3 (reasoning deleted outright)",
        train("s1-to-s3", 3, dcrs, stage1, mix=False, updates=later),
    )
    teacher_rows = compress("teacher", dcrs, stage1, "teacher")
    stage2 = train("stage2-teacher", 2, teacher_rows, stage1)
    score("TwT stage 2 (teacher-guided)", stage2)
    score("TwT final (stage 3)", train("stage3", 3, teacher_rows, stage2))
    for ratio in CTS_RATIOS:
        rows = compress(f"cts-{ratio}", dcrs, stage1, "cts", ratio)
        score(f"TwT stage 2 (CTS α={ratio})", train(f"stage2-cts-{ratio}", 2, rows, stage1))
    rows = compress("unconditional-0.5", dcrs, stage1, "unconditional", 0.5)
    score("stage 2, unconditional selection (α=0.5)", train("stage2-unconditional", 2, rows, stage1))
    reference = shared / "reference"  # trained apart on answer-conditioned DCRS rows (reference_step)
    rows = compress("cts-ref-0.5", dcrs, reference, "cts", 0.5)
    stage2_ref = train("stage2-cts-ref", 2, rows, stage1)
    score("TwT stage 2 (CTS α=0.5, own reference)", stage2_ref)
    score("TwT final via CTS α=0.5, own reference (stage 3)", train("stage3-cts-ref", 3, rows, stage2_ref))
    rows = compress("cts-ref-0.5-windowed", dcrs, reference, "cts", 0.5, "windowed")
    score("TwT stage 2 (CTS α=0.5, own reference, windowed)", train("stage2-cts-ref-win", 2, rows, stage1))
    for name, schedule in STEPWISE.items():
        title = "left" if name == "left" else "CTS decay"
        results[f"TwT stepwise ({title}, final)"] = stepwise(name, schedule, dcrs, stage1, reference, later)
    for label, source in (
        ("one teacher", "dcrs-one"),
        ("no DCRS", "no-dcrs"),
        ("gold-label DCRS", "dcrs-gold"),
    ):
        data = shared / source / "distill.jsonl"  # the same updates per stage as the DCRS path
        if data.read_bytes() == dcrs.read_bytes():
            # the same rows as the main path (gold labels can agree with the teachers' vote on every
            # question): the same data, seed and updates train the same students, so its result stands
            results[f"ablation: {label} (stage 3)"] = {**results[FINAL], "same_rows_as": FINAL}
            continue
        s1 = train(f"{source}-stage1", 1, data, base)
        rows = compress(source, data, s1, "teacher")
        s2 = train(f"{source}-stage2", 2, rows, s1)
        score(f"ablation: {label} (stage 3)", train(f"{source}-stage3", 3, rows, s2))
    return results


# --- the table ---------------------------------------------------------------------------------------------


def aggregate(fixed: dict, per_seed: dict[int, dict]) -> list[dict]:
    rows = []
    for name, r in fixed.items():
        rows.append(_row(name, [r], seeds=[]))
    labels = list(next(iter(per_seed.values())))
    for label in labels:
        rows.append(_row(label, [per_seed[s][label] for s in sorted(per_seed)], seeds=sorted(per_seed)))
    return rows


def comparisons(per_seed: dict[int, dict]) -> list[dict]:
    """The paired differences of ``COMPARISONS`` (accuracy, a − b per seed; ``twt.compare``)."""
    from twt.compare import paired_difference

    out = []
    for label, a, b in COMPARISONS:
        if any(
            r.get(a, {}).get("same_rows_as") == b or r.get(b, {}).get("same_rows_as") == a
            for r in per_seed.values()
        ):
            continue  # one side is the other's students (byte-identical rows): nothing to compare
        first = {s: r[a]["accuracy"] for s, r in per_seed.items() if a in r}
        second = {s: r[b]["accuracy"] for s, r in per_seed.items() if b in r}
        if first and second:
            out.append({"comparison": label, "a": a, "b": b, **paired_difference(first, second)})
    return out


def phase_curves(per_seed: dict[int, dict]) -> dict[str, list[dict]]:
    """Each stepwise schedule's accuracy and tokens per phase, averaged over seeds."""
    curves = {}
    for label in next(iter(per_seed.values())):
        runs = [r[label]["phases"] for r in per_seed.values() if "phases" in r.get(label, {})]
        if runs:
            curves[label] = [
                {
                    "phase": phases[0]["phase"],
                    "kept_tokens_mean": phases[0]["kept_tokens_mean"],
                    "updates": phases[0]["updates"],
                    "accuracy_mean": round(statistics.fmean(p["accuracy"] for p in phases), 4),
                    "output_tokens_mean": round(statistics.fmean(p["mean_output_tokens"] for p in phases), 2),
                }
                for phases in zip(*runs, strict=True)
            ]
    return curves


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
    lines = [
        MARK_START,
        "## Quality: accuracy against output tokens",
        "",
        f"`python benchmarks/quality.py --scale {meta['scale']}` — {meta['machine']}; "
        f"commit {meta['commit']}; "
        f"{meta['minutes']} minutes. {meta['eval']} held-out questions, greedy; seeds {meta['seeds']} "
        "(mean ± standard deviation over seeds; rows without a spread are seed-independent).",
        "",
        "| model | accuracy | output tokens | tokens per correct | by chain length: 1 / 2 / 3 / 4 ops |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        spread = f" ± {100 * r['accuracy_std']:.1f}" if r["seeds"] and len(r["seeds"]) > 1 else ""
        per_correct = f"{r['tokens_per_correct_mean']:.1f}" if r["tokens_per_correct_mean"] else "–"
        accuracy = f"{100 * r['accuracy_mean']:.1f}{spread}"
        by_ops = " / ".join(f"{100 * v:.0f}" for v in r.get("accuracy_by_ops", {}).values()) or "–"
        name = r["name"] + (
            f" — the same rows as {r['same_rows_as']}, so its result" if "same_rows_as" in r else ""
        )
        lines.append(f"| {name} | {accuracy} | {r['output_tokens_mean']:.1f} | {per_correct} | {by_ops} |")
    lines += [
        "",
        "Paired comparisons across seeds (accuracy points, a − b per seed; a difference is *clear* only when "
        "its 95% interval, mean ± t·sd/√n, excludes 0):",
        "",
        "| comparison | per seed | mean | 95% interval | clear |",
        "|---|---|---:|---:|---|",
    ]
    for c in meta.get("comparisons", []):
        per_seed = ", ".join(f"{100 * d:+.1f}" for d in c["differences"])
        interval = f"[{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]" if c["low"] is not None else "–"
        mean = f"{100 * c['mean']:+.1f}" if c["mean"] is not None else "–"
        lines.append(
            f"| {c['comparison']} | {per_seed} | {mean} | {interval} | {'yes' if c['clear'] else 'no'} |"
        )
    for label, curve in meta.get("curves", {}).items():
        lines += [
            "",
            f"{label}, by phase (mean over seeds): kept reasoning tokens → accuracy, output tokens",
            "",
        ]
        lines += [
            "| phase | updates | kept tokens | accuracy | output tokens |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {p['phase']} | {p['updates']} | {p['kept_tokens_mean']:.1f} | "
            f"{100 * p['accuracy_mean']:.1f} | {p['output_tokens_mean']:.1f} |"
            for p in curve
        ]
    if meta.get("dcrs"):
        lines += [
            "",
            "DCRS runs (pseudo-label accuracy: the teachers' vote against gold; kept: the kept rows):",
            "",
        ]
        lines += [
            "| run | labels | candidates | kept | pseudo-label accuracy | kept rows right |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name, d in meta["dcrs"].items():
            labels = "gold" if d["use_gold"] else "teachers' vote"
            kept_acc = f"{100 * d['kept_accuracy']:.1f}" if d.get("kept_accuracy") is not None else "–"
            lines.append(
                f"| {name} | {labels} | {d['candidates']} | {d['kept']} | "
                f"{100 * d['pseudo_label_accuracy']:.1f} | {kept_acc} |"
            )
    lines += ["", "![accuracy against output tokens](results/quality.png)", MARK_END]
    return "\n".join(lines)


def plot(rows: list[dict], curves: dict[str, list[dict]], path: Path) -> Path:
    """Two panels: every row's accuracy (± sd over seeds) against its output tokens, numbered, with the key
    beside it; and each stepwise schedule's curve, phase by phase (kept reasoning tokens → accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 9), dpi=110)
    grid = fig.add_gridspec(2, 2, width_ratios=(1.5, 1), height_ratios=(3, 1.25))
    ax, ax_curve = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    key = fig.add_subplot(grid[1, :])
    styles = {"teacher": ("tab:blue", "s"), "baseline": ("tab:gray", "D"), "student": ("tab:red", "o")}

    def role(row: dict) -> str:
        if not row["seeds"]:
            return "teacher" if row["name"].startswith("teacher") else "baseline"
        return "baseline" if row["name"].startswith(("answer-only", "ablation")) else "student"

    points = [(n, r["output_tokens_mean"], 100 * r["accuracy_mean"], r) for n, r in enumerate(rows, 1)]
    # labels of points close together are spread vertically (at least 3.2 points apart) with a leader line
    label_y: dict[int, float] = {}
    for n, x, y, _ in sorted(points, key=lambda p: p[2]):
        below = [label_y[m] for m, mx, _, _ in points if m in label_y and abs(mx - x) < 2.5]
        label_y[n] = max([y, *(b + 3.2 for b in below)])
    lines = []
    for n, x, y, row in points:
        color, marker = styles[role(row)]
        ax.errorbar(
            [x], [y], yerr=[100 * row["accuracy_std"]], color=color, marker=marker, ms=6, capsize=3, lw=1
        )
        moved = abs(label_y[n] - y) > 0.5
        ax.annotate(
            str(n),
            (x, y),
            xytext=(x + (1.6 if moved else 0.5), label_y[n] + (0 if moved else 1)),
            fontsize=8,
            va="center",
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if moved else None,
        )
        lines.append(f"{n:>2}  {row['name'][:60]:<60} {y:5.1f}%  {x:4.1f} tok")
    for name, (color, marker) in styles.items():
        ax.scatter(
            [], [], color=color, marker=marker, label=name if name != "baseline" else "baseline / ablation"
        )
    ax.set_xlabel("mean output tokens per answer (fewer is better)")
    ax.set_ylabel("accuracy, % (higher is better; bars: ± sd over seeds)")
    ax.set_ylim(-2, 108)
    ax.set_xlim(0, 1.15 * max(r["output_tokens_mean"] for r in rows))
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    ax.set_title("Accuracy against output tokens (held-out)")
    key.axis("off")
    half = (len(lines) + 1) // 2
    for column, chunk in enumerate((lines[:half], lines[half:])):
        key.text(0.5 * column, 1, "\n".join(chunk), va="top", ha="left", family="monospace", fontsize=7.5)
    for label, curve in curves.items():
        xs = [c["kept_tokens_mean"] for c in curve]
        ys = [100 * c["accuracy_mean"] for c in curve]
        ax_curve.plot(xs, ys, marker="o", label=label.removeprefix("TwT stepwise ").strip("()"))
    start = next((r for r in rows if r["name"].startswith("full reasoning")), None)
    if start is not None:
        ax_curve.axhline(100 * start["accuracy_mean"], color="tab:gray", ls="--", lw=1, label="stage 1")
    answer_only = next((r for r in rows if r["name"] == ANSWER_ONLY), None)
    if answer_only is not None:
        ax_curve.axhline(
            100 * answer_only["accuracy_mean"], color="tab:gray", ls=":", lw=1, label=ANSWER_ONLY
        )
    ax_curve.invert_xaxis()
    ax_curve.set_ylim(-2, 108)
    ax_curve.set_xlabel("reasoning tokens kept in the training rows")
    ax_curve.set_ylabel("accuracy after the phase, %")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(fontsize=7, loc="center left")
    ax_curve.set_title("Stepwise schedules, phase by phase")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_results(rows: list[dict], meta: dict) -> None:
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    extra = {k: meta[k] for k in ("comparisons", "curves", "dcrs") if k in meta}
    (results / "quality.json").write_text(
        json.dumps({"rows": rows, **extra}, indent=2, ensure_ascii=False) + "\n"
    )
    plot(rows, meta.get("curves", {}), results / "quality.png")
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--jobs", type=int, default=3, help="seeds trained at once, one torch thread each (default 3: all)"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw quality.png from results/quality.json"
    )
    args = parser.parse_args()
    if args.plot_only:
        saved = json.loads((ROOT / "benchmarks" / "results" / "quality.json").read_text())
        print(plot(saved["rows"], saved.get("curves", {}), ROOT / "benchmarks" / "results" / "quality.png"))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    work = args.workdir / args.scale
    fixed = shared_step(args.scale, work)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {seed: pool.submit(seed_step, args.scale, seed, work) for seed in args.seeds}
        per_seed = {seed: future.result() for seed, future in futures.items()}
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
        "curves": phase_curves(per_seed),
        "dcrs": dcrs_summary(work),
    }
    if not args.no_write:
        write_results(rows, meta)
    for r in rows:
        print(f"{r['name']:<60} {100 * r['accuracy_mean']:6.1f}  {r['output_tokens_mean']:6.1f}")
    print(json.dumps({"benchmark": "quality", **meta, "rows": rows}, ensure_ascii=False))


if __name__ == "__main__":
    main()
