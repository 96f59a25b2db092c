"""The pipeline's steps as plain functions on paths: what the Kubeflow components and ``twt run`` both call.

    steps.prepare_questions(questions_settings(config), train_out, eval_out)
    steps.sample_teacher(sample_settings(config, "teacher-large"), train_out, candidates_dir)
    steps.select_candidates(select_settings(config), train_out, [candidates_dir], distill_out, report_out)
    steps.distill_stage(stage_settings(config, 1), 1, distill_out, None, stage1_dir)
    ...                                     # compress_reasoning, stages 2 and 3, evaluate_students, gate, ...

Each function is named after its component (``components/``) and takes its settings first: the step's slice
(``twt.steps.settings``; the model, or its JSON text, what a component receives), so a task's inputs hold
only the settings it uses. ``twt.steps.workdir`` and the CLI cut the slice from a ``RunConfig`` before the
call. Then come the input paths, then the output paths. A function writes only its outputs; it never decides
whether to run (``twt.steps.workdir`` skips finished steps, KFP caches tasks). So a KFP run and
``twt run``/``twt demo`` produce the same files: one KFP output artifact is one output path here (a file, or
a directory for models, candidates and the evaluation). The paths are the caller's: ``RunDir`` names a local
run's files (the one place that spells the layout), KFP names its artifacts.

``log_metric``, where a function takes it, receives the step's headline numbers as ``(name, value)``;
the components pass ``Output[Metrics].log_metric``, the local runner passes nothing.

No ``kfp`` here: the library never imports it (tests/test_structure.py checks).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from twt.core.records import (
    DistillRow,
    Question,
    read_json,
    read_nonempty,
    read_rows,
    write_json,
    write_rows,
    write_text,
)
from twt.core.schema import STAGES, ReferenceConfig, TeacherConfig
from twt.steps import parameters
from twt.steps.reports import compression_markdown, dcrs_markdown, evaluation_markdown, rejection_markdown
from twt.steps.settings import (
    STEPS,
    CompressSettings,
    EvaluateSettings,
    ExplainSettings,
    GateSettings,
    PreflightSettings,
    PromoteSettings,
    QuestionsSettings,
    SampleSettings,
    SelectSettings,
    StageSettings,
    parse_slice,
)

LogMetric = Callable[[str, float], None] | None
STAGE_NAMES = tuple(f"stage{n}" for n in STAGES)
MERGED_CANDIDATES = "candidates.jsonl"  # twt.method.sampling.MERGED_FILE, named here without importing torch
METRICS_FILE = "metrics.json"  # twt.method.evaluate.METRICS_NAME


def _read_json(path: str | os.PathLike) -> dict:
    return read_json(path, "task input", dict)


def _log(log_metric: LogMetric, values: Mapping[str, float | int | None]) -> None:
    """Numbers only (KFP metrics are floats): None (tokens per correct with nothing correct) is left out."""
    if log_metric is None:
        return
    for name, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            log_metric(name, float(value))


def _use_s3_endpoint(s3_endpoint: str | None) -> None:
    """Point ``twt.core.store`` at the object store (``TWT_S3_ENDPOINT``) when an endpoint is given."""
    if s3_endpoint:
        os.environ["TWT_S3_ENDPOINT"] = s3_endpoint


def _check_model_cache(env: Mapping[str, str] | None = None) -> None:
    """In a pod that mounts the model cache at ``HF_HOME``: refuse, in one line, a cache this user cannot
    write (a claim whose root belongs to root), before any download or GPU work. Elsewhere: nothing."""
    from twt.steps.preflight import PreflightError, check_writable

    home = (os.environ if env is None else env).get("HF_HOME")
    if home and os.path.ismount(home):
        problem = check_writable(home)
        if problem:
            raise PreflightError(f"model cache {problem} (model_cache_pvc)")


def _prepare_model_access(s3_endpoint: str | None) -> None:
    """What every step that may load a model does first: the object store's endpoint set
    (``_use_s3_endpoint``), the model cache checked (``_check_model_cache``)."""
    _use_s3_endpoint(s3_endpoint)
    _check_model_cache()


def _metrics_file(path: str | os.PathLike) -> Path:
    """``metrics.json`` itself, or the evaluation directory that holds it."""
    path = Path(path)
    return path / METRICS_FILE if path.is_dir() else path


# --- the settings of a pipeline run ------------------------------------------------------------------------


def resolve_settings(arguments: Mapping[str, object]) -> tuple:
    """Each step's settings as JSON text (``sample_teacher``: the list of the teachers' settings), in
    ``twt.steps.settings.STEPS`` order, from the pipeline's arguments: the typed parameters
    (``twt.steps.parameters.PARAMETERS``), ``config_override`` and ``s3_endpoint``; the defaults are the
    packaged demo configuration (``twt.steps.parameters.resolve``). A bad argument is one ``ConfigError``
    line."""
    from twt.core.load import default_config_path

    arguments = dict(arguments)
    config_override = str(arguments.pop("config_override", "") or "")
    _use_s3_endpoint(str(arguments.pop("s3_endpoint", "") or ""))
    settings = parameters.resolve(
        default_config_path().read_text(encoding="utf-8"), config_override, arguments
    )
    # JSON text: KFP's dict parameters cannot hold null, and would turn every integer into a float
    return tuple(_json(settings[step.name]) for step in STEPS)


def teacher_settings(sample: str) -> list[str]:
    """``resolve_settings``' ``sample_teacher`` output (a JSON list) as one JSON text per teacher (the loop's
    items)."""
    return [_json(one) for one in json.loads(sample)]


def _json(data: object) -> str:
    return json.dumps(data, sort_keys=True)


def preflight(
    settings: PreflightSettings | str,
    report_out: str | os.PathLike | None = None,
    s3_endpoint: str | None = None,
    model_cache_pvc: str = "",
    minio_secret: str = "the MinIO Secret",
    teacher_keys_secret: str = "the teacher API keys Secret",
) -> list[str]:
    """The run's checks before any GPU work (``twt.steps.preflight``): Secrets, MinIO, HTTP teachers, the
    model cache claim and the training-job API, in this pod's namespace. Raises ``PreflightError`` (one line
    per problem); ``report_out`` gets the Markdown report either way."""
    from twt.steps import preflight as checks
    from twt.training.jobs import own_namespace

    settings = parse_slice(PreflightSettings, settings)
    _use_s3_endpoint(s3_endpoint)
    where = checks.Environment(
        env=dict(os.environ),
        namespace=own_namespace(),
        model_cache_pvc=model_cache_pvc,
        minio_secret=minio_secret,
        teacher_keys_secret=teacher_keys_secret,
        kube=checks.in_cluster_api(),
    )
    return checks.run(settings, where, report_out)


# --- questions ---------------------------------------------------------------------------------------------


def _local_rows(src: str, schema, scratch: Path) -> list:
    """The rows of a question file given as a local path or an ``s3://``/``file://`` URI."""
    from twt.core.load import is_uri

    if is_uri(src):
        from twt.core import store

        target = scratch / Path(src.rstrip("/")).name
        store.get_file(src, target)
        src = str(target)
    return read_nonempty(src, schema)  # validates: a bad row names the file and line; empty is refused


def prepare_questions(
    settings: QuestionsSettings | str,
    train_out: str | os.PathLike,
    eval_out: str | os.PathLike,
    eval_questions: int | None = None,
    s3_endpoint: str | None = None,
    log_metric: LogMetric = None,
) -> tuple[int, int]:
    """The training questions (what the teachers solve) and the held-out evaluation questions.

    ``task.kind`` embedded: drawn by ``twt.embedded.task.make_questions`` (train and eval never share a
    question); files: copied from ``task.questions``/``task.eval`` (local paths or URIs).
    ``eval_questions`` caps the held-out set. A file that already holds exactly these questions is not
    rewritten. Returns the counts.
    """
    from twt.embedded.task import make_questions

    task = parse_slice(QuestionsSettings, settings).task
    _use_s3_endpoint(s3_endpoint)
    if task.kind == "files":
        with tempfile.TemporaryDirectory(prefix="twt-questions-") as scratch:
            train = _local_rows(task.questions, Question, Path(scratch))
            evalq = _local_rows(task.eval, Question, Path(scratch))
        evalq = evalq[:eval_questions] if eval_questions else evalq
    else:
        evalq = make_questions(
            eval_questions or task.eval_questions, task.seed, "eval", task.weights, stratified=True
        )
        train = make_questions(
            task.train_questions, task.seed, "train", task.weights, exclude={q.question for q in evalq}
        )
    for path, rows in ((Path(train_out), train), (Path(eval_out), evalq)):
        if not path.is_file() or list(read_rows(path, Question)) != rows:
            write_rows(path, rows)
    _log(log_metric, {"train_questions": len(train), "eval_questions": len(evalq)})
    return len(train), len(evalq)


# --- sampling and selection --------------------------------------------------------------------------------


def sample_teacher(
    settings: SampleSettings | str,
    questions: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: bool = True,
    log_metric: LogMetric = None,
    shard_size: int | None = None,
    s3_endpoint: str | None = None,
) -> Path:
    """``k`` candidates per question from the slice's teacher into ``out_dir/<teacher>/`` (resumable shards,
    then the merged ``candidates.jsonl``); returns the merged file. ``s3_endpoint``: for s3:// models."""
    from twt.method import sampling

    _prepare_model_access(s3_endpoint)
    teacher = parse_slice(SampleSettings, settings).teacher
    sizes = {} if shard_size is None else {"shard_size": shard_size}
    teacher_dir = sampling.sample_teacher(teacher, questions, out_dir, progress=progress, **sizes)
    merged = sampling.merge_candidates(out_dir, teacher.name)
    done = _read_json(teacher_dir / sampling.DONE_FILE)
    _log(log_metric, {k: done[k] for k in ("candidates", "with_answer", "mean_tokens", "mean_confidence")})
    return merged


def candidate_files(
    settings: SelectSettings,
    candidates: Sequence[str | os.PathLike],
    teachers: Sequence[str] | None = None,
) -> list[Path]:
    """The candidate files to select from. ``candidates`` are sampling outputs, directories that hold
    ``<teacher>/candidates.jsonl`` (one for a local run, one per KFP sampling task): then each teacher's
    file in configuration order, from whichever directory holds it. Or they are candidate files (``twt
    dcrs``), taken as given (reading them names a missing, empty or unreadable one)."""
    configured = settings.teachers
    sampled = [any((Path(c) / t / MERGED_CANDIDATES).is_file() for t in configured) for c in candidates]
    if not any(sampled):
        return [Path(c) for c in candidates]
    if not all(sampled):
        others = [str(c) for c, is_dir in zip(candidates, sampled, strict=True) if not is_dir]
        raise ValueError(f"{others}: no <teacher>/{MERGED_CANDIDATES} in them, unlike the other candidates")
    names = list(teachers) if teachers else configured
    unknown = sorted(set(names) - set(configured))
    if unknown:
        raise ValueError(f"teachers {unknown} are not in the configuration; it has {configured}")
    files = []
    for name in [n for n in configured if n in names]:
        found = [Path(d) / name / MERGED_CANDIDATES for d in candidates]
        found = [f for f in found if f.is_file()]
        if not found:
            raise FileNotFoundError(
                f"no {name}/{MERGED_CANDIDATES} in {[str(d) for d in candidates]}: was {name!r} sampled?"
            )
        if len(found) > 1:
            raise ValueError(f"teacher {name!r} was sampled more than once: {[str(f) for f in found]}")
        files.append(found[0])
    return files


def select_candidates(
    settings: SelectSettings | str,
    questions: str | os.PathLike,
    candidates: Sequence[str | os.PathLike],
    distill_out: str | os.PathLike,
    report_out: str | os.PathLike,
    teachers: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    log_metric: LogMetric = None,
    s3_endpoint: str | None = None,
    markdown_out: str | os.PathLike | None = None,
) -> dict:
    """DCRS over the teachers' candidates (``candidate_files``; ``teachers``: default every configured one):
    the distillation rows and the report (``twt.method.dcrs.run_dcrs``). ``cache_dir`` keeps embeddings for a
    resumed run; ``markdown_out`` gets the report's summary (``twt.steps.reports``)."""
    from twt.method.dcrs import run_dcrs

    _prepare_model_access(s3_endpoint)
    settings = parse_slice(SelectSettings, settings)
    files = candidate_files(settings, candidates, teachers)
    report = run_dcrs(questions, files, distill_out, report_out, settings.dcrs, cache_dir=cache_dir)
    if markdown_out is not None:
        write_text(markdown_out, dcrs_markdown(report))
    _log(log_metric, {f"candidates_{k}": v for k, v in report["candidates"].items()})
    return report


# --- training and compression ------------------------------------------------------------------------------


def distill_stage(
    settings: StageSettings | str,
    stage: int,
    rows: str | os.PathLike,
    base_model_dir: str | os.PathLike | None,
    model_out: str | os.PathLike,
    compress_report: str | os.PathLike | None = None,
    progress: bool = True,
    log_metric: LogMetric = None,
    run_id: str | None = None,
    device: str | None = None,
    max_updates: int | None = None,
    s3_endpoint: str | None = None,
) -> dict:
    """Train stage ``stage`` (1, 2, 3) on ``rows`` from ``base_model_dir`` (None: the configured student
    base; stages 2 and 3 start from the previous stage) into ``model_out``; returns the stage record.

    ``model_out/twt.json`` records the lineage: the run, its teachers, the base model and (from
    ``compress_report``, for stages 2 and 3) how the reasoning was compressed. The run's ``training``
    section says where the training runs (here, N local processes, or a Kubeflow TrainJob/PyTorchJob:
    ``twt.training.launch``); checkpoints go to ``<training.checkpoints>/<run>/<run_id>/stage<n>`` (run_id:
    the argument, else ``KFP_RUN_ID``/``TWT_RUN_ID``, else "local"), where a retried step resumes.
    """
    from twt.training.launch import launch_stage, stage_job

    _prepare_model_access(s3_endpoint)  # s3:// checkpoints, models, and a training job's inputs
    step = parse_slice(StageSettings, settings)
    if step.stage != stage:
        raise ValueError(f"the settings are stage {step.stage}'s, not stage {stage}'s")
    if stage > 1 and base_model_dir is None:
        raise ValueError(f"stage {stage} starts from stage {stage - 1}'s model: give base_model_dir")
    base = step.student.model if base_model_dir is None else str(base_model_dir)
    if base_model_dir is None and step.student.layers is not None:  # a fresh student of the configured size
        from twt.embedded.tiny import build_student

        size = f"{step.student.hidden}x{step.student.layers}"
        base = str(Path(model_out).parent / f"student-base-{size}")
        build_student(
            Path(base), step.student.hidden, step.student.layers, tokenizer_dir=Path(step.student.model)
        )
    lineage = {
        "run": step.run,
        "teachers": [t.model_dump() for t in step.teachers],
        "base_model": step.student.model,
    }
    if stage > 1 and compress_report is not None and Path(compress_report).is_file():
        report = _read_json(compress_report)
        lineage["compression"] = {k: report.get(k) for k in ("method", "target_ratio", "achieved_ratio")}
    if stage == 2 and step.internalize is not None:
        return _internalize_stage(step, rows, base, model_out, lineage, progress, log_metric)
    run_id = run_id or os.environ.get("KFP_RUN_ID") or os.environ.get("TWT_RUN_ID")
    overrides = {k: v for k, v in (("device", device), ("max_updates", max_updates)) if v is not None}
    job = stage_job(
        step, rows, base, model_out, lineage, run_id=run_id, progress=progress, overrides=overrides
    )
    result = launch_stage(step, job)
    training = result.get("training", {})
    _log(
        log_metric,
        {
            "rows": result["rows"],
            "pairs": result["pairs"],
            "mixed_previous": result["mixed_previous"],
            **{k: training.get(k) for k in ("updates", "first_loss", "final_loss", "tokens_per_s")},
        },
    )
    return result


def _internalize_stage(
    step, rows, base, model_out, lineage: dict, progress: bool, log_metric: LogMetric
) -> dict:
    """Stage 2 as a stepwise schedule (``twt.training.internalize``) from the full reasoning of ``rows``
    down to none; each phase's kept tokens and final loss are logged as ``internalize_<name>_phase<p>``."""
    from twt.training.internalize import run_internalize
    from twt.training.sft import SFTConfig

    settings = step.training
    result = run_internalize(
        rows,
        base,
        model_out,
        step.internalize,
        SFTConfig.from_stage(settings),
        condition=step.condition,
        window=step.window,
        seed=settings.seed,
        reference_model=step.reference_model,
        extra_lineage=lineage,
        log_metric=(lambda name, value, phase: log_metric(f"{name}_phase{phase}", value))
        if log_metric
        else None,
        progress=progress,
    )
    phases = result["phases"]
    _log(log_metric, {"phases": len(phases), "updates": sum(p["training"]["updates"] for p in phases)})
    return {"stage": 2, "model": str(model_out), "rows": len(list(read_rows(rows, DistillRow))), **result}


def train_reference_model(
    reference: ReferenceConfig, rows: str | os.PathLike, out_dir: str | os.PathLike, progress=True
):
    """CTS's reference model trained on the DCRS ``rows`` into ``out_dir`` (reused when its data and
    settings are unchanged): ``twt.training.reference.train_reference`` with the ``reference`` section,
    ``base_model`` set (as the compress step's slice has it)."""
    from twt.training.reference import train_reference

    if not reference.base_model:
        raise ValueError("the reference model needs a base model (reference.base_model)")
    return train_reference(rows, reference.base_model, out_dir, reference, progress=progress)


def student_attempts(
    model_dir: str | os.PathLike, rows: list[DistillRow], max_new_tokens: int
) -> dict[str, str]:
    """The stage-1 student's own greedy solution of each question (what teacher-guided compression sees)."""
    from twt.method.sampling import answer_questions
    from twt.method.teachers import load_teacher

    questions = list({r.id: Question(id=r.id, question=r.question) for r in rows}.values())
    student = TeacherConfig(
        name="stage1-student", model=str(model_dir), max_new_tokens=max_new_tokens, batch_size=64
    )
    answers = answer_questions(load_teacher(student), questions, instruction="solve")
    return {a.id: a.text for a in answers}


def compress_reasoning(
    settings: CompressSettings | str,
    rows: str | os.PathLike,
    stage1_model: str | os.PathLike,
    rows_out: str | os.PathLike,
    report_out: str | os.PathLike,
    attempts_path: str | os.PathLike | None = None,
    progress: bool = True,
    log_metric: LogMetric = None,
    s3_endpoint: str | None = None,
    markdown_out: str | os.PathLike | None = None,
) -> dict:
    """Stage-2 data: every kept reasoning compressed by the configured method (``twt.method.compress``).

    Teacher-guided compression shows the teacher the stage-1 student's own attempt; ``attempts_path``
    keeps those attempts (JSON id → text) so a resumed run does not generate them again. ``markdown_out``
    gets the report's summary (``twt.steps.reports``).
    """
    from twt.method.compress import run_compress

    _prepare_model_access(s3_endpoint)
    step = parse_slice(CompressSettings, settings)
    compression = step.compression
    if compression.method == "teacher":
        if step.teacher is None:
            raise ValueError("compression method 'teacher' needs the rewriting teacher in its settings")
        teacher = step.teacher
        if attempts_path is not None and Path(attempts_path).is_file():
            attempts = _read_json(attempts_path)
        else:
            rows_in = list(read_rows(rows, DistillRow))
            attempts = student_attempts(stage1_model, rows_in, teacher.max_new_tokens)
            if compression.attempt_verdict:
                from twt.method.compress import attempt_with_verdict

                answers = {r.id: r.answer for r in rows_in}
                attempts = {i: attempt_with_verdict(text, answers[i]) for i, text in attempts.items()}
            if attempts_path is not None:
                write_json(attempts_path, attempts)
        report = run_compress(
            rows, rows_out, report_out, compression, teacher=teacher, attempts=attempts, progress=progress
        )
    else:
        reference = compression.reference_model or str(stage1_model)
        if step.reference is not None and not compression.reference_model:
            out_dir = Path(rows_out).parent / "reference"
            reference = str(train_reference_model(step.reference, rows, out_dir, progress))
        report = run_compress(
            rows, rows_out, report_out, compression, reference_model=reference, progress=progress
        )
    if markdown_out is not None:
        write_text(markdown_out, compression_markdown(report))
    _log(
        log_metric,
        {k: report.get(k) for k in ("rows_in", "rows_out", "length_in", "length_out", "achieved_ratio")},
    )
    return report


# --- evaluation, gate, promotion ---------------------------------------------------------------------------


def eval_targets(step: EvaluateSettings, stage_models: Mapping[str, str | os.PathLike]) -> list:
    """The students (``stage_models``: name → model directory) and the configured baselines."""
    from twt.method.evaluate import EvalTarget

    names = [n for n in reversed(STAGE_NAMES) if n in stage_models] + sorted(
        set(stage_models) - set(STAGE_NAMES)
    )
    targets = [EvalTarget(n, str(stage_models[n]), "solve", role="student") for n in names]
    if step.student is not None:
        # the base student was only ever asked for direct answers: that is its fair baseline
        targets.append(EvalTarget("student-base", step.student.model, "direct", role="baseline"))
    for teacher in step.teachers:  # the teachers evaluated as baselines
        options = {}
        if teacher.backend == "openai":
            options = {"base_url": teacher.base_url, "api_key_env": teacher.api_key_env}
        targets.append(
            EvalTarget(
                teacher.name,
                teacher.model,
                "solve",
                teacher.templates(),
                role="teacher",
                backend=teacher.backend,
                options=options,
            )
        )
    return targets


def evaluate_students(
    settings: EvaluateSettings | str,
    eval_questions: str | os.PathLike,
    stage_models: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    markdown_out: str | os.PathLike | None = None,
    progress: bool = True,
    log_metric: LogMetric = None,
    s3_endpoint: str | None = None,
) -> dict:
    """Every stage's student and the baselines on the held-out questions: ``out_dir/metrics.json``, the
    answers, the picture and ``report.md`` (``twt.method.evaluate``; resumes per model). ``markdown_out`` gets
    the same report with the picture embedded (KFP's Markdown viewer shows one file). Returns the metrics."""
    from twt.method.evaluate import evaluate_models

    _prepare_model_access(s3_endpoint)
    step = parse_slice(EvaluateSettings, settings)
    metrics = evaluate_models(
        eval_targets(step, stage_models),
        read_nonempty(eval_questions, Question, "questions"),
        out_dir,
        step.evaluation,
        progress=progress,
    )
    if markdown_out is not None:
        write_text(markdown_out, evaluation_markdown(metrics, Path(out_dir), None, True))
    _log(
        log_metric,
        {
            f"{name}_{key}": result.get(key)
            for name, result in metrics["models"].items()
            for key in ("accuracy", "mean_output_tokens", "tokens_per_correct")
        },
    )
    return metrics


def gate(
    settings: GateSettings | str,
    metrics_path: str | os.PathLike,
    verdict_out: str | os.PathLike,
    report_out: str | os.PathLike | None = None,
    embed_plot: bool = False,
) -> tuple[bool, str]:
    """The gate's verdict on the evaluated students (``twt.method.gate.decide`` with the configured policy),
    written to ``verdict_out``; ``report_out`` gets the evaluation report with the verdict (the picture
    linked, or embedded with ``embed_plot``). Returns (passed, the chosen student or "")."""
    from twt.method.gate import decide

    policy = parse_slice(GateSettings, settings).gate
    metrics_file = _metrics_file(metrics_path)
    metrics = _read_json(metrics_file)
    verdict = decide(metrics["models"], policy).to_dict()
    write_json(verdict_out, verdict)
    if report_out is not None:
        text = evaluation_markdown(metrics, metrics_file.parent, verdict, embed_plot)
        write_text(report_out, text)
    return bool(verdict["passed"]), verdict["student"] or ""


def registry_root(settings: PromoteSettings, registry_uri: str | None = None) -> str:
    """Where promotion publishes: ``registry_uri`` when given, else the configuration's ``registry.uri``."""
    root = registry_uri or settings.registry.uri
    if not root:
        raise ValueError(
            "no registry to publish to: set registry.uri in the configuration or pass a registry URI "
            "(the pipeline parameter registry_uri, e.g. s3://twt-registry)"
        )
    return root


def promote_student(
    settings: PromoteSettings | str,
    verdict_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    models: Mapping[str, str | os.PathLike],
    dcrs_report: str | os.PathLike,
    registry_uri: str | None = None,
    promoted_out: str | os.PathLike | None = None,
    pulled_dir: str | os.PathLike | None = None,
    s3_endpoint: str | None = None,
    run_id: str = "",
    storage_key: str = "",
) -> dict:
    """Publish the gate's student (``models``: stage name → directory) to the registry with its metrics,
    verdict and lineage, then pull it back and verify every checksum (``twt.registry.models``).

    ``pulled_dir`` keeps the verified copy in ``<pulled_dir>/<model>-<version>`` (else it goes to a
    temporary directory, removed after the check);
    ``promoted_out`` gets the record that is returned: model, version, ref, uri, student, verified.
    A retry of the same ``run_id`` returns the version it already published (``registry.publish``).
    With a Kubeflow Model Registry address (configuration or ``TWT_MODEL_REGISTRY_ADDRESS``), the version
    is registered there once per ``run_id`` (``twt.registry.kubeflow``; record key
    ``kubeflow_model_registry``), its artifact naming ``storage_key`` (the Secret with the object store's
    keys; '' = ``$TWT_MODEL_REGISTRY_STORAGE_KEY`` or the pipeline's default).
    """
    from twt.registry import models as registry

    step = parse_slice(PromoteSettings, settings)
    settings = step.registry
    _use_s3_endpoint(s3_endpoint)
    verdict = _read_json(verdict_path)
    if not verdict["passed"]:
        raise ValueError(f"the gate did not pass; nothing to promote ({'; '.join(verdict['reasons'])})")
    student = verdict["student"]
    if student not in models:
        raise ValueError(f"the gate chose {student!r}, which is not among the models given: {sorted(models)}")
    root = registry_root(step, registry_uri)
    model_dir = Path(models[student])
    metrics = _read_json(_metrics_file(metrics_path))["models"]
    dcrs = _read_json(dcrs_report)
    lineage = _read_json(model_dir / "twt.json")
    lineage["dcrs"] = {"candidates": dcrs["candidates"], "thresholds": dcrs.get("thresholds")}
    version = registry.publish(
        model_dir,
        root,
        settings.model_name,
        settings.version,
        metrics=metrics,
        gate=verdict,
        lineage=lineage,
        tags=settings.tags,
        run_id=run_id,
    )
    kubeflow = None
    if settings.kubeflow_registry_address or os.environ.get("TWT_MODEL_REGISTRY_ADDRESS"):
        from twt import __version__
        from twt.registry import kubeflow as kubeflow_model_registry

        kubeflow = kubeflow_model_registry.register(
            version,
            run_id=run_id,
            pipeline_version=__version__,
            address=settings.kubeflow_registry_address,
            storage_key=storage_key or None,
        )
    with tempfile.TemporaryDirectory(prefix="twt-pull-") as scratch:
        pulled = (
            Path(pulled_dir if pulled_dir is not None else scratch) / f"{version.model}-{version.version}"
        )
        shutil.rmtree(pulled, ignore_errors=True)
        registry.pull(version.ref, root, pulled)  # raises unless every file matches its checksum
    result = {
        "model": version.model,
        "version": version.version,
        "ref": version.ref,
        "uri": version.uri,
        "student": student,
        "pulled_to": str(pulled) if pulled_dir is not None else None,
        "verified": True,
    }
    if kubeflow is not None:
        result["kubeflow_model_registry"] = kubeflow
    if promoted_out is not None:
        write_json(promoted_out, result)
    return result


def explain_rejection(
    settings: ExplainSettings | str,
    verdict_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    report_out: str | os.PathLike,
) -> str:
    """A Markdown report of why the gate refused promotion: its reasons, the policy, the per-student
    checks and the evaluation table; written to ``report_out`` and returned."""
    verdict = _read_json(verdict_path)
    metrics = _read_json(_metrics_file(metrics_path))
    text = rejection_markdown(parse_slice(ExplainSettings, settings), verdict, metrics)
    write_text(report_out, text)
    return text


def serve_student(
    promoted: str | os.PathLike,
    served_out: str | os.PathLike | None = None,
    runtime: str = "twt-vllm",
    service_account: str = "twt-kserve",
    gpu_resource: str = "nvidia.com/gpu",
    node_selector: Mapping | None = None,
    tolerations: Sequence | None = None,
    api_client=None,
    timeout_s: float = 1800,
) -> dict:
    """Serve the promoted student (``promoted``: promotion's record, with the registry's ``uri``) with a
    KServe InferenceService in this pod's namespace (``twt.registry.serving``), and wait until it is ready.
    ``served_out`` gets the record: name, namespace, version, storage URI, runtime, URL."""
    from twt.registry import serving
    from twt.training.jobs import own_namespace

    record = _read_json(promoted)
    spec = serving.ServingSpec(
        model=record["model"],
        version=str(record["version"]),
        storage_uri=record["uri"],
        namespace=own_namespace(),
        runtime=runtime,
        service_account=service_account,
        gpu_resource=gpu_resource,
        node_selector=dict(node_selector or {}),
        tolerations=list(tolerations or []),
    )
    obj = serving.render_inference_service(spec)
    if api_client is None:
        from twt.steps.preflight import in_cluster_api

        api_client = in_cluster_api()
        if api_client is None:
            raise serving.ServingError(
                "serving needs a Kubernetes cluster (KUBERNETES_SERVICE_HOST is not set)"
            )
    action = serving.apply(obj, api_client)
    url = serving.wait_ready(obj, api_client, timeout_s=timeout_s)
    result = {
        "name": obj["metadata"]["name"],
        "namespace": spec.namespace,
        "ref": record.get("ref", f"{spec.model}@{spec.version}"),
        "storage_uri": spec.storage_uri,
        "runtime": runtime,
        "action": action,
        "url": url,
    }
    if served_out is not None:
        write_json(served_out, result)
    return result
