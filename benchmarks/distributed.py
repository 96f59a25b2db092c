"""Training in 1 against 2 processes (DDP, gloo on CPU; NCCL with --gpu), the same global batch, in one run.

    python benchmarks/distributed.py                    # CPU: 1 vs 2 processes, one torch thread each
    python benchmarks/distributed.py --gpu --processes 1 2 4 8

Both runs train the same random student-base-shaped Llama (hidden 64, 2 layers) on the same 3,000
embedded-task pairs for the same updates with the same global batch (8 packed rows of 256 tokens per
update), each started by ``torchrun`` like ``twt distill --processes N``. Reported per run: wall seconds
(launch to exit, imports included), training seconds (the loop alone), real tokens/s over all processes,
first and final loss, and the largest weight difference from the 1-process run. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(spec_path: str) -> None:
    """One training process (what torchrun starts): train, the first process writes the summary."""
    import torch

    from twt.training.sft import SFTConfig, train_sft

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    pairs = [tuple(p) for p in spec["pairs"]]
    result = train_sft(pairs, spec["model"], spec["out"], SFTConfig(**spec["config"]), progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(spec["out"], "summary.json").write_text(json.dumps(result))


def run(processes: int, spec: dict, tmp: Path) -> dict:
    spec = {**spec, "out": str(tmp / f"p{processes}")}
    (tmp / f"spec{processes}.json").write_text(json.dumps(spec))
    from twt.training.distributed import torchrun_command

    command = torchrun_command([__file__, "--worker", str(tmp / f"spec{processes}.json")], processes)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(spec["threads"])})
    wall = time.perf_counter() - started
    result = json.loads(Path(spec["out"], "summary.json").read_text())
    return {
        "processes": processes,
        "wall_seconds": round(wall, 2),
        "train_seconds": result["seconds"],
        "real_tokens_per_s": round(result["tokens_per_s"] * (1 - result["padding_share"]), 1),
        "first_loss": result["first_loss"],
        "final_loss": result["final_loss"],
        "updates": result["updates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gpu", action="store_true", help="CUDA (NCCL) instead of CPU (gloo)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process on CPU")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return

    import torch
    from safetensors.torch import load_file
    from train_packing import build_model, make_pairs

    config = {
        "updates": args.updates, "batch_size": 8, "max_length": 256, "learning_rate": 1e-3,
        "device": "cuda" if args.gpu else "cpu", "log_every": 10**9,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = build_model(tmp / "model", args.gpu)
        spec = {"pairs": make_pairs(args.examples, seed=0), "model": str(model), "config": config}
        spec["threads"] = args.threads
        runs = [run(n, spec, tmp) for n in args.processes]
        reference = load_file(str(tmp / f"p{args.processes[0]}" / "model.safetensors"))
        for entry in runs[1:]:
            weights = load_file(str(tmp / f"p{entry['processes']}" / "model.safetensors"))
            entry["max_weight_diff"] = max((weights[k] - reference[k]).abs().max().item() for k in reference)
    base = runs[0]
    result = {
        "benchmark": "distributed",
        "device": torch.cuda.get_device_name() if args.gpu else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg()[0],
        "global_batch_rows": config["batch_size"],
        "runs": runs,
        "speedup_train": {r["processes"]: round(base["train_seconds"] / r["train_seconds"], 3) for r in runs},
        "speedup_wall": {r["processes"]: round(base["wall_seconds"] / r["wall_seconds"], 3) for r in runs},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
