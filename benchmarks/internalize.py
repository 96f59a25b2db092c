"""Pilot: does a stepwise internalisation schedule take a student below stage 1's tokens without the fall?

    python benchmarks/internalize.py --layers 4 --schedules left:6 cts   # one seed, the CPU scale's data

Shared with ``benchmarks/quality.py`` (same work directory, same scale): a seed's questions, the teachers'
candidates and DCRS (``<workdir>/<scale>/seed-<seed>``, made here when the quality benchmark has not). Per
student size (``--hidden`` × ``--layers``; the 2 × 64 size is the packaged student base, other sizes are
built by ``twt.embedded.tiny.build_student``): stage 1 on the full reasoning with the scale's stage-1
updates, then each schedule of ``--schedules`` from that stage-1 student (``left:<tokens per phase>`` or
``cts``, the ratios 0.75/0.5/0.25/0), every phase evaluated on the held-out questions, and the control at the
same total updates: stage 1 → stage 3 outright (``--control``). Every phase's accuracy and output tokens go
to ``<workdir>/internalize-<size>-seed<seed>.json`` and the last line printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality import SCALES, evaluate, make_config  # noqa: E402


def parse_schedule(text: str, updates_per_phase: int, smoothing: float | None, reset: bool):
    """``left:<tokens per phase>`` or ``cts[:<ratio>/...]`` as a ``twt.core.schema.InternalizeConfig``."""
    from twt.core.schema import InternalizeConfig

    name, _, arg = text.partition(":")
    kwargs: dict = {"updates_per_phase": updates_per_phase, "smoothing": smoothing, "reset_optimizer": reset}
    if name == "left":
        kwargs["tokens_per_phase"] = int(arg or 6)
    elif arg:
        kwargs["ratios"] = [float(r) for r in arg.split("/")]
    return InternalizeConfig(schedule=name, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=tuple(SCALES), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--schedules", nargs="*", default=["left:6"])
    parser.add_argument("--updates-per-phase", type=int, default=150)
    parser.add_argument("--smoothing", type=float, default=None)
    parser.add_argument("--no-reset", action="store_true", help="keep AdamW's moments across phases")
    parser.add_argument("--stage1-updates", type=int, default=None, help="default: the scale's stage 1")
    parser.add_argument("--control", action="store_true", help="also stage 1 → 3 outright, same updates")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "quality")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from twt.embedded.tiny import build_student
    from twt.steps import workdir
    from twt.training.internalize import run_internalize
    from twt.training.sft import SFTConfig
    from twt.training.stages import run_stage

    started = time.perf_counter()
    work = args.workdir / args.scale
    config = make_config(args.scale, args.seed)
    run = workdir.RunDir(config, work / f"seed-{args.seed}")  # benchmarks/quality.py's seed directory
    workdir.prepare_questions(run)
    workdir.sample_teachers(run, progress=False)
    workdir.select_candidates(run)
    size = f"{args.hidden}x{args.layers}"
    out = work / f"internalize-{size}-seed{args.seed}"
    base = config.student.model
    if (args.hidden, args.layers) != (64, 2):
        base = str(work / "students" / f"student-{size}")
        build_student(Path(base), args.hidden, args.layers)
    dcrs = run.distill_rows
    results: dict = {"size": size, "seed": args.seed, "scale": args.scale}

    def score(label: str, model: Path) -> dict:
        return evaluate(run.eval_questions, f"{label} ({size}, seed {args.seed})", str(model), "solve", out)

    stage1 = out / "stage1"
    settings = config.stage(1)
    if not (stage1 / "model.safetensors").is_file():
        sft = SFTConfig.from_stage(settings, updates=args.stage1_updates or settings.updates)
        run_stage(1, dcrs, base, stage1, sft, progress=False)
    results["stage1"] = score("stage 1", stage1)
    print("stage1", json.dumps(results["stage1"]), flush=True)
    sft = SFTConfig.from_stage(config.stage(2))
    for text in args.schedules:
        schedule = parse_schedule(text, args.updates_per_phase, args.smoothing, not args.no_reset)
        label = text.replace(":", "-").replace("/", "_") + f"-u{args.updates_per_phase}"
        label += "-smooth" if args.smoothing else ""
        label += "-noreset" if args.no_reset else ""
        target = out / f"stepwise-{label}"
        summary = run_internalize(
            dcrs,
            stage1,
            target,
            schedule,
            sft,
            condition=config.compression.condition,
            window=config.compression.window,
            seed=args.seed,
            evaluate=lambda m, label=label: score(f"stepwise {label} {m.name}", m),
            progress=False,
        )
        results[f"stepwise {label}"] = summary["phases"]
        for p in summary["phases"]:
            print(label, p["phase"], p["kept_tokens_mean"], p["evaluation"].get("accuracy"), flush=True)
        if args.control:
            total = sum(p["training"]["updates"] for p in summary["phases"])
            control = out / f"s1-to-s3-{total}"
            if not (control / "model.safetensors").is_file():
                run_stage(
                    3,
                    dcrs,
                    stage1,
                    control,
                    SFTConfig.from_stage(config.stage(3), updates=total),
                    progress=False,
                )
            results[f"control s1→s3 {total} updates"] = score(f"s1-to-s3 {total}", control)
    results["minutes"] = round((time.perf_counter() - started) / 60, 1)
    (work / f"internalize-{size}-seed{args.seed}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
