"""The ``twt`` command line: one subcommand per pipeline step, plus ``twt demo``.

    twt demo                         run the embedded default end to end
    twt task build --out DIR         train the tokenizer, tiny teachers and student base
    twt task questions --out DIR     write train/eval question files of the embedded task
    twt --help, twt <command> --help

Heavy libraries are imported inside the handlers, so ``twt --help`` starts fast. Bad input ends with a
one-line ``twt: error: ...`` and exit status 2, never a traceback (``TWT_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[argparse.Namespace], int | None]


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# --- handlers ----------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> None:
    from twt.demo import run_demo

    run_demo(config_path=args.config, workdir=args.workdir, eval_questions=args.eval_questions)


def cmd_task_build(args: argparse.Namespace) -> None:
    from twt.tiny import build_all

    _print_json(build_all(args.out, device=args.device, only=args.only))


def cmd_task_questions(args: argparse.Namespace) -> None:
    from twt.records import write_rows
    from twt.task import make_questions

    evalq = make_questions(args.eval, args.seed, "eval")
    train = make_questions(args.train, args.seed, "train", exclude={q.question for q in evalq})
    if args.unlabeled:
        train = [q.model_copy(update={"answer": None}) for q in train]
    args.out.mkdir(parents=True, exist_ok=True)
    write_rows(args.out / "train.jsonl", train)
    write_rows(args.out / "eval.jsonl", evalq)
    print(f"wrote {len(train)} training and {len(evalq)} held-out questions to {args.out}")


# --- parser ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twt", description="Distil teachers' reasoning into a terse student."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the embedded default end to end (tiny models, local store)")
    demo.add_argument("--config", type=Path, default=None, help="run configuration (default: the demo's)")
    demo.add_argument("--workdir", type=Path, default=None, help="where artifacts go (default: runs/demo)")
    demo.add_argument("--eval-questions", type=int, default=None, help="held-out questions to score")
    demo.set_defaults(handler=cmd_demo)

    task = sub.add_parser("task", help="the embedded reasoning task and its tiny models")
    task_sub = task.add_subparsers(dest="task_command", required=True, metavar="ACTION")
    build = task_sub.add_parser("build", help="train the tokenizer, tiny teachers and student base")
    build.add_argument(
        "--out", type=Path, required=True, help="output directory (package data: twt/data/tiny)"
    )
    build.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    build.add_argument("--only", nargs="*", help="train only these models (names)")
    build.set_defaults(handler=cmd_task_build)
    questions = task_sub.add_parser("questions", help="write train.jsonl and eval.jsonl question files")
    questions.add_argument("--out", type=Path, required=True)
    questions.add_argument("--train", type=int, default=2000)
    questions.add_argument("--eval", type=int, default=500)
    questions.add_argument("--seed", type=int, default=0)
    questions.add_argument("--unlabeled", action="store_true", help="drop gold answers from train.jsonl")
    questions.set_defaults(handler=cmd_task_questions)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input; they end with one line instead of a traceback."""
    errors: list[type[BaseException]] = [ValueError, FileNotFoundError, PermissionError, KeyError]
    try:
        from twt.store import StoreError

        errors.append(StoreError)
    except ImportError:  # pragma: no cover - store is part of the package
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        print("twt: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as err:
        if os.environ.get("TWT_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"twt: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
