"""The training budgets' curves: held-out accuracy and output tokens of each stage after a few learning rates
and update counts, on the embedded task's default run (the data of `twt run configs/demo.yaml`).

    python benchmarks/budgets.py --workdir runs/demo --stage 1 --lr 1e-3 3e-3 --updates 300 600 1000
    python benchmarks/budgets.py --workdir runs/demo --stage 2 --parent runs/demo/stage1 ...
    python benchmarks/budgets.py --workdir runs/demo --stage 3 --parent runs/demo/stage2 ...

Each (learning rate, updates) pair is its own run, with its own warm-up and cosine decay (what a user sets),
from the student base (stage 1) or ``--parent`` (stages 2 and 3: the rows of ``compress/rows.jsonl``),
evaluated greedily on the run's held-out questions. The optimiser starts fresh at every stage, on purpose:
each stage has another target format, and AdamW's moments of the previous format would push the first
updates the old way. Prints one JSON object per run and a last line with them all; RESULTS.md keeps the
table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from twt.core.schema import STAGES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workdir", type=Path, required=True, help="a run directory with dcrs/ (and compress/)"
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--stage", type=int, choices=STAGES, default=1)
    parser.add_argument("--parent", type=Path, help="stages 2 and 3: the model they start from")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--updates", type=int, nargs="+", default=[300, 600])
    parser.add_argument("--eval", type=int, default=500, help="held-out questions evaluated (a prefix)")
    args = parser.parse_args()

    from twt.core.load import load_config
    from twt.core.records import Question, read_rows
    from twt.core.schema import EvaluationConfig
    from twt.method.evaluate import EvalTarget, evaluate_model
    from twt.training.sft import SFTConfig
    from twt.training.stages import run_stage

    config = load_config(args.config)
    rows = args.workdir / ("dcrs/distill.jsonl" if args.stage == 1 else "compress/rows.jsonl")
    parent = config.student.model if args.stage == 1 else str(args.parent)
    settings = config.stage(args.stage)
    questions = list(read_rows(args.workdir / "questions" / "eval.jsonl", Question))[: args.eval]
    results = []
    for lr in args.lr:
        for updates in args.updates:
            out = args.workdir / "budgets" / f"stage{args.stage}-lr{lr:g}-u{updates}"
            started = time.perf_counter()
            if not (out / "model.safetensors").is_file():
                sft = SFTConfig.from_stage(settings, updates=updates, learning_rate=lr, save_every=0)
                run_stage(
                    args.stage, rows, parent, out, sft, mix_previous=settings.mix_previous, progress=False
                )
            minutes = (time.perf_counter() - started) / 60
            target = EvalTarget(out.name, str(out), "solve")
            metrics = evaluate_model(target, questions, EvaluationConfig(max_new_tokens=128))
            result = {
                "stage": args.stage,
                "learning_rate": lr,
                "updates": updates,
                "accuracy": round(metrics["accuracy"], 4),
                "mean_output_tokens": round(metrics["mean_output_tokens"], 2),
                "train_minutes": round(minutes, 2),
            }
            print(json.dumps(result), flush=True)
            results.append(result)
    print(json.dumps({"benchmark": "budgets", "results": results}))


if __name__ == "__main__":
    main()
