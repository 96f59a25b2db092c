"""The ``twt`` command line: one subcommand per pipeline step, plus ``twt demo``.

    twt demo                         run the embedded default end to end
    twt task build --out DIR         train the tokenizer, tiny teachers and student base
    twt task questions --out DIR     write train/eval question files of the embedded task
    twt sample --questions Q --out DIR [--config C] [--teacher NAME ...]
                                     k candidates per question from each teacher (resumable shards)
    twt dcrs --questions Q --candidates A.jsonl B.jsonl --out distill.jsonl --report report.json
                                     dual-criteria rejection sampling of the candidates
    twt compress --method teacher|cts|unconditional|truncate --data distill.jsonl --out rows.jsonl --report R
                                     compressed reasoning for stage 2
    twt distill --stage 1|2|3 --data ROWS --base MODEL --out DIR
                                     one SFT stage (settings from the configuration's stages section)
    twt run --config C [--workdir W] [--step S]
                                     every step of a configuration (or one step) in a work directory
    twt eval --workdir W             evaluate every stage's student and the baselines of a run
    twt gate --workdir W             the promotion gate's verdict on a run's evaluation
    twt registry publish|list|show|pull|gc
                                     the model registry (s3://bucket/prefix or a directory)
    twt pipeline list|pull|tag       published pipeline templates (python -m pipelines publish pushes them)
    twt --help, twt <command> --help

The flags that set a configuration's settings (``--quality-threshold``, ``--method``, ``--processes``, ...)
are derived from the schema (``twt.app.flags``): their help is the field's description, their values go
through the schema's checks. Heavy libraries are imported inside the handlers, so ``twt --help`` starts
fast. Bad input ends with a one-line ``twt: error: ...`` and exit status 2, never a traceback
(``TWT_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from twt.app.flags import add_setting_flags, apply_setting_flags, section_with_flags
from twt.core.schema import STAGES, TaskConfig
from twt.registry import claims
from twt.steps.settings import LOCAL_STEPS

Handler = Callable[[argparse.Namespace], int | None]


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# --- handlers ----------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> None:
    from twt.app.demo import run_demo

    pipeline_runner = None
    if args.runner == "kfp":  # the entry point hands the pipeline layer in; the library never imports it
        from functools import partial

        from pipelines.local import run_demo_pipeline

        pipeline_runner = partial(run_demo_pipeline, verbose=args.verbose)
    run_demo(
        config_path=args.config,
        workdir=args.workdir,
        eval_questions=args.eval_questions,
        runner=args.runner,
        pipeline_runner=pipeline_runner,
    )


def cmd_task_build(args: argparse.Namespace) -> None:
    from twt.embedded.tiny import build_all

    _print_json(build_all(args.out, device=args.device, only=args.only))


def cmd_task_questions(args: argparse.Namespace) -> None:
    from twt.core.records import Question, read_rows, write_rows
    from twt.steps import steps
    from twt.steps.settings import QuestionsSettings

    task = section_with_flags(TaskConfig(), args, "task")  # --train/--eval/--seed over the schema's defaults
    train_path, eval_path = args.out / "train.jsonl", args.out / "eval.jsonl"
    train, evalq = steps.prepare_questions(QuestionsSettings(task=task), train_path, eval_path)
    if args.unlabeled:
        unlabeled = [q.model_copy(update={"answer": None}) for q in read_rows(train_path, Question)]
        write_rows(train_path, unlabeled)
    print(f"wrote {train} training and {evalq} held-out questions to {args.out}")


def cmd_sample(args: argparse.Namespace) -> None:
    from twt.core.load import default_config_path, load_config
    from twt.core.records import read_json
    from twt.method.sampling import DONE_FILE
    from twt.steps import steps
    from twt.steps.settings import sample_settings

    config = load_config(args.config or default_config_path())
    names = args.teacher or config.teacher_names
    for name in names:
        settings = sample_settings(config, name)
        merged = steps.sample_teacher(
            settings, args.questions, args.out, progress=not args.quiet, shard_size=args.shard_size
        )
        done = read_json(merged.parent / DONE_FILE)
        print(
            f"{name}: {done['candidates']} candidates, {done['without_answer']} without an answer, "
            f"{done['mean_tokens']} tokens on average -> {merged}"
        )


def cmd_dcrs(args: argparse.Namespace) -> None:
    from twt.core.load import default_config_path, load_config
    from twt.steps import steps
    from twt.steps.settings import select_settings

    config = apply_setting_flags(load_config(args.config or default_config_path()), args)
    report = steps.select_candidates(
        select_settings(config),
        args.questions,
        args.candidates,
        args.out,
        args.report,
        cache_dir=args.cache_dir,
    )
    _print_json({key: report[key] for key in ("candidates", "teachers", "questions", "pseudo_label")})


def cmd_distill(args: argparse.Namespace) -> None:
    from twt.core.load import default_config_path, load_config
    from twt.steps import steps
    from twt.steps.settings import stage_settings

    # where and how it trains: --processes/--parallel over the training section; checkpoints beside the
    # output unless the configuration names a durable location
    config = apply_setting_flags(load_config(args.config or default_config_path()), args)
    if config.training.checkpoints is None:
        checkpoints = str(Path(args.out).parent / f".{Path(args.out).name}.checkpoints")
        config.training = config.training.model_copy(update={"checkpoints": checkpoints})
    result = steps.distill_stage(  # the same step as twt run and the pipeline: lineage in <out>/twt.json
        stage_settings(config, args.stage),
        args.stage,
        args.data,
        args.base,
        args.out,
        progress=not args.quiet,
        device=args.device,
        max_updates=args.max_updates,
    )
    training = result["training"]
    print(
        f"stage {args.stage}: {result['pairs']} examples ({result['mixed_previous']} from stage "
        f"{args.stage - 1}), {training['updates']} updates, loss {training['first_loss']} -> "
        f"{training['final_loss']}, {training['tokens_per_s']} tokens/s -> {args.out}"
    )


def cmd_train_worker(args: argparse.Namespace) -> None:
    from twt.training.launch import StageJob, run_worker

    result = run_worker(StageJob.from_json(args.spec))
    if os.environ.get("RANK", "0") == "0":
        training = result["training"]
        print(
            f"stage {result['stage']}: {training['updates']} updates on {training['processes']} processes, "
            f"loss {training['first_loss']} -> {training['final_loss']}, {training['tokens_per_s']} tokens/s",
            flush=True,
        )


def cmd_compress(args: argparse.Namespace) -> None:
    from twt.core.load import default_config_path, load_config
    from twt.core.records import write_json
    from twt.method.compress import load_attempts
    from twt.steps import steps
    from twt.steps.settings import compress_settings

    # another --method drops the configuration's settings it does not use; a flag it ignores is refused
    config = apply_setting_flags(load_config(args.config or default_config_path()), args)
    method = config.compression.method
    attempts_path = None
    if args.attempts is not None:  # the stage-1 student's attempts, as the step keeps them (id -> text)
        attempts_path = args.report.with_name(args.report.stem + ".attempts.json")
        write_json(attempts_path, load_attempts(args.attempts))
    needs_student = (method == "teacher" and attempts_path is None) or (
        method != "teacher" and config.compression.reference_model is None and not config.reference.train
    )
    if needs_student and args.student is None:
        what = "its attempts (--attempts)" if method == "teacher" else "a scoring model (--reference)"
        raise ValueError(f"method {method!r} needs the stage-1 student (--student DIR) or {what}")
    report = steps.compress_reasoning(  # the same step as twt run and the pipeline
        compress_settings(config),
        args.data,
        args.student,
        args.out,
        args.report,
        attempts_path=attempts_path,
        progress=not args.quiet,
    )
    _print_json({k: v for k, v in report.items() if k != "details"})


def _run_dir(args: argparse.Namespace):
    from twt.core.load import default_config_path, load_config
    from twt.steps.workdir import RunDir

    config = load_config(args.config or default_config_path())
    return RunDir(config, Path(args.workdir or config.workdir))


def cmd_run(args: argparse.Namespace) -> None:
    from twt.steps import workdir

    run = _run_dir(args)
    if not args.step:
        result = workdir.run_all(run, progress=not args.quiet)
        _print_json({"gate": result["gate"], "promoted": result["promoted"], "timings": result["timings"]})
        return
    for step in args.step:
        result = workdir.run_step(run, step, not args.quiet)
        print(
            f"{step}: done"
            + (f" ({result})" if isinstance(result, dict) and step in ("gate", "promote_student") else "")
        )


def cmd_eval(args: argparse.Namespace) -> None:
    from twt.method.metrics_markdown import metrics_table
    from twt.steps import workdir

    metrics = workdir.evaluate_students(_run_dir(args), not args.quiet)
    print(metrics_table(metrics["models"]))


def cmd_gate(args: argparse.Namespace) -> int:
    from twt.steps import workdir

    verdict = workdir.gate(_run_dir(args))
    print(
        ("PASSED" if verdict["passed"] else "FAILED")
        + (f": {verdict['student']}" if verdict["student"] else "")
    )
    for reason in verdict["reasons"]:
        print(f"  - {reason}")
    return 0 if verdict["passed"] else 1


def _check_names(args: argparse.Namespace) -> None:
    """The shared name rules (``twt.core.names``), before anything is read or written."""
    from twt.core import names

    if getattr(args, "name", None) is not None:
        names.check_model_name(args.name)
    if getattr(args, "version", "auto") != "auto":
        names.check_version(args.version)
    if getattr(args, "ref", None) is not None:
        names.split_ref(args.ref, args.command)
    for tag in getattr(args, "tags", None) or ():
        names.check_tag(tag)


def cmd_registry(args: argparse.Namespace) -> None:
    from twt.core.records import read_json
    from twt.registry import models as registry

    _check_names(args)
    if args.registry_command == "publish":
        metrics = read_json(args.metrics, "--metrics", dict) if args.metrics else None
        if metrics is not None and not isinstance(metrics.get("models"), dict):
            raise ValueError(f"{args.metrics}: --metrics: no 'models' mapping (expected eval/metrics.json)")
        metrics = metrics["models"] if metrics is not None else None
        gate = read_json(args.gate, "--gate", dict) if args.gate else None
        version = registry.publish(
            args.model_dir, args.root, args.name, args.version, metrics=metrics, gate=gate
        )
        print(
            f"published {version.ref} at {version.uri} ({version.files} files, {version.total_bytes} bytes)"
        )
    elif args.registry_command == "list":
        for item in registry.list_versions(args.root, args.name):
            if isinstance(item, str):
                print(item)
            else:
                print(f"{item.ref}  {item.created}  {json.dumps(item.headline)}")
    elif args.registry_command == "show":
        _print_json(registry.show(args.root, args.ref))
    elif args.registry_command == "register":
        from twt import __version__
        from twt.registry.kubeflow import register_version

        version = registry.get_version(args.root, args.ref)
        result = register_version(
            version,
            run_id=args.run_id,
            pipeline_version=__version__,
            address=args.address,
            storage_key=args.storage_key,
        )
        _print_json(result)
    elif args.registry_command == "gc":
        found = claims.gc(args.root, args.name, older_than_s=args.older_than, dry_run=args.dry_run)
        for item in found:
            print(f"{'would remove' if args.dry_run else 'removed'} {item.kind} {item.uri}: {item.reason}")
        print(f"{len(found)} leftover(s) {'found' if args.dry_run else 'removed'} under {args.root}")
    else:
        version = registry.pull(args.ref, args.root, args.to)
        print(f"pulled {version.ref} into {args.to}; every checksum verified ({version.files} files)")


def _pipeline_root(args: argparse.Namespace) -> str:
    root = args.root or os.environ.get("TWT_PIPELINE_REGISTRY")
    if not root:
        raise ValueError("no registry root: pass --root or set TWT_PIPELINE_REGISTRY")
    return root


def cmd_pipeline(args: argparse.Namespace) -> None:
    from twt.registry import pipelines as pipeline_registry

    _check_names(args)
    root = _pipeline_root(args)
    if args.pipeline_command == "list":
        names = [args.name] if args.name else pipeline_registry.list_pipelines(root)
        for name in names:
            for v in pipeline_registry.list_versions(root, name):
                tags = f"  tags: {', '.join(v.tags)}" if v.tags else ""
                print(
                    f"{v.ref}  {v.created}  package {v.package_version or '?'}  git {v.git_sha or '?'}  "
                    f"kfp {v.kfp_version or '?'}  sha256 {v.sha256[:12]}{tags}"
                )
    elif args.pipeline_command == "pull":
        v = pipeline_registry.pull(args.ref, root, args.to, overwrite=args.force)
        print(f"pulled {v.ref} (git {v.git_sha or '?'}) to {args.to}; sha256 {v.sha256} verified")
    else:
        v = pipeline_registry.get_version(root, args.ref)  # a tag may name the version: @latest -> stable
        for tag in args.tags:
            pipeline_registry.set_tag(root, v.name, tag, v.version)
            print(f"{v.name}@{tag} -> {v.version}")


# --- parser ------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line too (``twt: error: ...``, exit 2), with where to find the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"twt: error: {message.splitlines()[0]} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="twt", description="Distil teachers' reasoning into a terse student.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the embedded default end to end (tiny models, local store)")
    demo.add_argument("--config", type=Path, default=None, help="run configuration (default: the demo's)")
    demo.add_argument("--workdir", type=Path, default=None, help="where artifacts go (default: runs/demo)")
    demo.add_argument("--eval-questions", type=int, default=None, help="held-out questions to score")
    demo.add_argument(
        "-v", "--verbose", action="store_true", help="kfp's own log lines on the console (always: steps.log)"
    )
    demo.add_argument(
        "--runner",
        choices=("kfp", "direct"),
        default="kfp",
        help="kfp: the twt-distillation pipeline itself via kfp.local (default); direct: the same steps in "
        "this process, resuming where a stopped run left off",
    )
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
    questions.add_argument("--out", type=Path, required=True, help="directory for train.jsonl and eval.jsonl")
    questions.add_argument("--unlabeled", action="store_true", help="drop gold answers from train.jsonl")
    add_setting_flags(
        questions,
        "task",
        ("train_questions", "eval_questions", "seed"),
        spellings={"train_questions": "--train", "eval_questions": "--eval", "seed": "--seed"},
        description="The embedded task's settings (task.<field>); one not given keeps the schema's default.",
    )
    questions.set_defaults(handler=cmd_task_questions)

    sample = sub.add_parser("sample", help="sample k reasoning candidates per question from the teachers")
    sample.add_argument("--questions", type=Path, required=True, help="question rows (JSONL)")
    sample.add_argument("--out", type=Path, required=True, help="candidates directory (one folder a teacher)")
    sample.add_argument("--config", type=Path, default=None, help="run configuration (default: the demo's)")
    sample.add_argument("--teacher", nargs="*", help="only these teachers (names in the configuration)")
    sample.add_argument("--shard-size", type=int, default=256, help="questions per resumable shard")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    sample.set_defaults(handler=cmd_sample)

    dcrs = sub.add_parser("dcrs", help="dual-criteria rejection sampling: keep right, diverse candidates")
    dcrs.add_argument("--questions", type=Path, required=True, help="question rows (JSONL)")
    dcrs.add_argument("--candidates", type=Path, nargs="+", required=True, help="candidate files (JSONL)")
    dcrs.add_argument("--out", type=Path, required=True, help="distillation rows to write (JSONL)")
    dcrs.add_argument("--report", type=Path, required=True, help="report to write (JSON)")
    dcrs.add_argument("--config", type=Path, default=None, help="run configuration for the dcrs section")
    dcrs.add_argument("--cache-dir", type=Path, help="embedding cache, so an interrupted run resumes")
    selection = ("quality_threshold", "similarity_threshold", "max_per_question", "confidence", "use_gold")
    add_setting_flags(dcrs, "dcrs", selection)
    dcrs.set_defaults(handler=cmd_dcrs)

    distill = sub.add_parser("distill", help="train one stage: 1 full, 2 compressed, 3 answer-only reasoning")
    distill.add_argument(
        "--stage",
        type=int,
        choices=STAGES,
        required=True,
        help="1 full reasoning, 2 compressed, 3 answer only",
    )
    distill.add_argument(
        "--data", type=Path, required=True, help="distillation rows (JSONL; stage 2/3: compressed)"
    )
    distill.add_argument(
        "--base", type=Path, required=True, help="model to start from (the previous stage's)"
    )
    distill.add_argument("--out", type=Path, required=True, help="where the trained model goes")
    distill.add_argument("--config", type=Path, default=None, help="run configuration (stages section)")
    distill.add_argument("--device", default=None, help="cpu, cuda, ... (default: what accelerate picks)")
    distill.add_argument("--max-updates", type=int, default=None, help="stop after this many updates")
    distill.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(distill, "training", ("processes", "parallel"))
    distill.set_defaults(handler=cmd_distill)
    worker = sub.add_parser("train-worker", help="one process of a stage's training (what torchrun starts)")
    worker.add_argument("--spec", required=True, help="the stage job as JSON (twt.training.launch.StageJob)")
    worker.set_defaults(handler=cmd_train_worker)

    compress = sub.add_parser("compress", help="compress the kept reasoning for stage 2")
    compress.add_argument("--data", type=Path, required=True, help="distillation rows (JSONL, from dcrs)")
    compress.add_argument("--out", type=Path, required=True, help="rows with compressed_reasoning (JSONL)")
    compress.add_argument("--report", type=Path, required=True, help="compression report (JSON)")
    compress.add_argument("--config", type=Path, default=None, help="run configuration (compression section)")
    compress.add_argument("--attempts", type=Path, help="teacher: the stage-1 student's attempts (JSONL)")
    compress.add_argument(
        "--student",
        type=Path,
        help="the stage-1 student: writes the attempts the teacher sees; the default cts scoring model",
    )
    compress.add_argument("--quiet", action="store_true", help="no progress bar")
    compression = ("method", "teacher", "attempt_verdict", "ratio", "reference_model", "condition", "window")
    compression += ("selection", "segment")
    add_setting_flags(compress, "compression", compression, spellings={"reference_model": "--reference"})
    compress.set_defaults(handler=cmd_compress)

    run = sub.add_parser("run", help="run a configuration's steps in a local work directory (resumable)")
    run.add_argument("--config", type=Path, default=None, help="run configuration (default: the demo's)")
    run.add_argument("--workdir", type=Path, default=None, help="default: the configuration's workdir")
    run.add_argument(
        "--step", nargs="*", choices=LOCAL_STEPS, help="only these steps (default: all in order)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=cmd_run)

    for name, handler, text in (
        ("eval", cmd_eval, "evaluate every stage's student and the baselines of a run"),
        ("gate", cmd_gate, "the gate's verdict on a run's evaluation (exit 1 when it fails)"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", type=Path, default=None, help="run configuration")
        command.add_argument("--workdir", type=Path, default=None, help="the run's work directory")
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        command.set_defaults(handler=handler)

    reg = sub.add_parser("registry", help="publish, list, show and pull students (s3://bucket/prefix or DIR)")
    reg_sub = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    publish = reg_sub.add_parser("publish", help="publish a model directory as an immutable version")
    publish.add_argument("model_dir", type=Path)
    publish.add_argument("--root", required=True, help="registry root: s3://bucket/prefix or a directory")
    publish.add_argument("--name", required=True, help="model name")
    publish.add_argument("--version", default="auto", help="version (default: auto = next number)")
    publish.add_argument("--metrics", type=Path, help="eval/metrics.json of the run")
    publish.add_argument("--gate", type=Path, help="gate.json of the run")
    listing = reg_sub.add_parser("list", help="models, or the versions of one model")
    listing.add_argument("name", nargs="?")
    listing.add_argument("--root", required=True)
    show = reg_sub.add_parser("show", help="the manifest metadata of NAME@VERSION (or @latest)")
    show.add_argument("ref")
    show.add_argument("--root", required=True)
    pull = reg_sub.add_parser("pull", help="download NAME@VERSION|latest, verifying every checksum")
    pull.add_argument("ref")
    pull.add_argument("--root", required=True)
    pull.add_argument("--to", type=Path, required=True, help="a new or empty directory")
    gc = reg_sub.add_parser(
        "gc", help="remove what killed publishes left (claims, staging, uploads without a manifest)"
    )
    gc.add_argument("name", nargs="?", help="one model (default: all)")
    gc.add_argument("--root", required=True)
    gc.add_argument(
        "--older-than",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also what is older than this (default: $TWT_REGISTRY_STALE_AFTER_S or 6 hours); leftovers of "
        "a process that is gone (same host) go at once",
    )
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    kubeflow = reg_sub.add_parser(
        "register",
        help="register a published version in Kubeflow Model Registry (again, after a failed promotion's "
        "registration; once per run id). Address and token: $TWT_MODEL_REGISTRY_ADDRESS, _TOKEN",
    )
    kubeflow.add_argument("ref", help="NAME@VERSION (or @latest)")
    kubeflow.add_argument("--root", required=True)
    kubeflow.add_argument("--run-id", default="", help="the KFP run that published it (the retry line says)")
    kubeflow.add_argument("--address", help="host:port or http(s)://host[:port] (default: the environment)")
    kubeflow.add_argument("--storage-key", help="the data connection with the S3 keys (default: as promote)")
    reg.set_defaults(handler=cmd_registry)

    pipe = sub.add_parser("pipeline", help="list, pull and tag published pipeline templates")
    pipe_sub = pipe.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    root_help = "registry root: s3://bucket/prefix or a directory (default: $TWT_PIPELINE_REGISTRY)"
    pipe_list = pipe_sub.add_parser("list", help="versions, tags, package version and git sha of each")
    pipe_list.add_argument("name", nargs="?", help="one pipeline (default: all)")
    pipe_list.add_argument("--root", help=root_help)
    pipe_pull = pipe_sub.add_parser("pull", help="download NAME@VERSION|TAG, verifying its sha256")
    pipe_pull.add_argument("ref", help="e.g. twt-distillation@0.1.0 or twt-distillation@stable")
    pipe_pull.add_argument("--to", type=Path, required=True, help="file to write (refused if it exists)")
    pipe_pull.add_argument("--root", help=root_help)
    pipe_pull.add_argument("--force", action="store_true", help="replace an existing file")
    pipe_tag = pipe_sub.add_parser("tag", help="point tags at NAME@VERSION (atomic: one object per tag)")
    pipe_tag.add_argument("ref", help="the version: NAME@VERSION, or a tag that names it")
    pipe_tag.add_argument("tags", nargs="+", help="tags to set or move, e.g. stable")
    pipe_tag.add_argument("--root", help=root_help)
    pipe.set_defaults(handler=cmd_pipeline)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input; they end with one line instead of a traceback."""
    from twt.core.store import StoreError
    from twt.method.teachers import TeacherBackendError, TeacherRequestError

    errors: list[type[BaseException]] = [ValueError, FileNotFoundError, PermissionError, KeyError]
    errors += [IsADirectoryError, NotADirectoryError, StoreError, TeacherBackendError, TeacherRequestError]
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
