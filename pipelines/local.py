"""The ``twt-distillation`` DAG on this machine with ``kfp.local`` (the same pipeline function as a cluster).

    python -m pipelines local --config configs/demo.yaml [--root runs/kfp-local] [--registry DIR]

``kfp.local.SubprocessRunner(use_venv=False)`` runs every component in a subprocess of this Python (so
the installed ``twt`` and the tiny models are used); ``dsl.ParallelFor`` runs at most two teachers at a
time, ``dsl.If``/``dsl.Else`` pick promotion or the rejection report. Images, accelerators, resources and
the ``kfp.kubernetes`` settings (node selector, tolerations, secrets, volumes) are ignored locally.

The configuration goes in resolved (paths absolute, ``${TWT_DATA}`` expanded: the subprocesses share this
machine). The registry is ``--registry``, else the configuration's ``registry.uri``, else
``<root>/registry``. Artifacts land in ``<root>/twt-distillation-<timestamp>/<task>/<output>``.
"""

import builtins
import contextlib
import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from pipelines.release import run_arguments
from twt.core.records import read_json

PROMOTE_TASK, REJECT_TASK = "promote-student", "explain-rejection"
STAGE_TASKS = {1: "distill-stage", 2: "distill-stage-2", 3: "distill-stage-3"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FINISHED = re.compile(r"Task '?([\w-]+)'? finished with status (\w+)")
CACHE_HIT = re.compile(r"Task '?([\w-]+)'? cache hit \(key=([0-9a-f]+)")
PROGRESS_BAR = re.compile(r"^[^|]{0,80}?\d{1,3}%\|")  # a tqdm line: "train stage1:  45%|####  | 450/1000 ..."


class ConsoleProgress:
    """The newest progress bar the running tasks print (tqdm, read from their output), redrawn in place on
    one console line; cleared before any other line is shown."""

    def __init__(self, stream, width: int = 110) -> None:
        self.stream, self.width, self.shown = stream, width, False

    def offer(self, text: str) -> None:
        line = ANSI.sub("", text).strip()
        if PROGRESS_BAR.match(line):
            self.stream.write("\r\x1b[K" + line[: self.width])
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.shown = False


class RunnerRecords(logging.Handler):
    """kfp.local's own log records of one run: which tasks finished how, which were cache hits. Each line
    goes to ``stream`` (colour codes removed), and with ``progress`` a short line per task to stdout."""

    def __init__(self, stream=None, progress: bool = False, bars: ConsoleProgress | None = None) -> None:
        super().__init__(logging.INFO)
        self.stream, self.progress, self.bars = stream, progress, bars
        self.finished: dict[str, str] = {}
        self.cache_hits: dict[str, str] = {}  # task -> the start of its cache key

    def emit(self, record: logging.LogRecord) -> None:
        message = ANSI.sub("", record.getMessage())
        if self.stream is not None:
            self.stream.write(f"{record.levelname} {message}\n")
        if hit := CACHE_HIT.search(message):
            self.cache_hits[hit.group(1)] = hit.group(2)
            self._show(f"  {hit.group(1)}: cached")
        elif done := FINISHED.search(message):
            self.finished[done.group(1)] = done.group(2)
            self._show(f"  {done.group(1)}: {done.group(2).lower()}")

    def _show(self, line: str) -> None:
        if self.progress:
            if self.bars is not None:
                self.bars.clear()
            sys.__stdout__.write(line + "\n")
            sys.__stdout__.flush()


@contextlib.contextmanager
def runner_records(records: RunnerRecords, verbose: bool = False):
    """Route kfp.local's log records into ``records`` for the whole run (kfp logs cache hits outside its
    logging context, and inside it replaces the root logger's handlers with one printing to stdout, colour
    codes included); ``verbose`` keeps kfp's own console lines as well."""
    from kfp.local import logging_utils

    original = logging_utils.local_logger_context

    @contextlib.contextmanager
    def context():
        if not verbose:
            yield
            return
        with original():  # clears the root handlers (ours too) and restores them afterwards
            logging.getLogger().addHandler(records)
            try:
                yield
            finally:
                logging.getLogger().removeHandler(records)

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(records)
    logging_utils.local_logger_context = context
    try:
        yield records
    finally:
        logging_utils.local_logger_context = original
        logger.removeHandler(records)
        logger.setLevel(level)


def open_log(path: str | os.PathLike) -> TextIO:
    """The tasks' log, appended to line by line."""
    return Path(path).open("a", encoding="utf-8", buffering=1)


@contextlib.contextmanager
def kfp_local_session(
    log_file: str | os.PathLike | TextIO | None = None, bars: ConsoleProgress | None = None
):
    """What a ``kfp.local`` pipeline run leaves changed, put back afterwards.

    kfp 2.17 indents task logs by swapping ``builtins.print`` in and out; two ParallelFor iterations
    doing that at once can leave the indenting ``print`` installed for the rest of the process (every
    later ``print`` then starts with four spaces). The expected warnings about cluster-only settings are
    silenced too (see the module docstring). With ``log_file``, what the tasks print (their whole
    executor input and logs) goes to that file; kfp's one-line task start/finish messages still show, and
    ``bars`` redraws the tasks' progress bars on the console. ``log_file`` may be an open text stream: the
    runner gives the one its records go to, so one handle writes the file (two buffered handles appending
    to one file flush independently)."""
    original = builtins.print
    with contextlib.ExitStack() as stack:
        if log_file:
            handle = log_file if hasattr(log_file, "write") else stack.enter_context(open_log(log_file))

            def to_log(*args, **kwargs):
                kwargs.setdefault("file", handle)
                original(*args, **kwargs)
                if bars is not None and args:
                    bars.offer(" ".join(str(a) for a in args))

            builtins.print = to_log
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
                warnings.filterwarnings("ignore", message=".*custom or non-Python base image")
                yield
        finally:
            builtins.print = original


def latest_run_dir(root: str | os.PathLike, since: float = 0.0) -> Path | None:
    """The newest ``twt-distillation-*`` run directory under ``root`` created after ``since``."""
    from pipelines.distillation import PIPELINE_NAME

    runs = [p for p in Path(root).glob(f"{PIPELINE_NAME}-*") if p.is_dir() and p.stat().st_mtime >= since]
    return max(runs, key=lambda p: p.stat().st_mtime, default=None)


def run_local(
    config_path: str | os.PathLike,
    root: str | os.PathLike,
    registry_uri: str | None = None,
    overrides: Mapping[str, object] | None = None,
    log_file: str | os.PathLike | None = None,
    caching: bool = True,
    verbose: bool = False,
    progress: bool = False,
) -> dict:
    """Run the whole pipeline locally; returns the run directory, seconds, and the promotion record or the
    rejection report's path. ``log_file`` takes the tasks' own output (see ``kfp_local_session``)."""
    from kfp import local

    from pipelines.distillation import twt_distillation
    from twt.core.load import load_config

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    arguments = run_arguments(config_path, resolved=True, overrides=overrides)
    if "registry_uri" not in arguments:
        arguments["registry_uri"] = (
            registry_uri or load_config(config_path).registry.uri or str(root / "registry")
        )
    # locally the object store (if any) is this environment's, not the cluster's default endpoint
    arguments.setdefault("s3_endpoint", os.environ.get("TWT_S3_ENDPOINT", ""))
    # ParallelFor runs two tasks at once; torch's default of one thread per core would oversubscribe the
    # cores, and spinning OpenMP threads then slow sampling several-fold (measured here on 2 cores)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    # kfp.local's cache: <root>/.kfp_cache, keyed by each task's component, command and inputs
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
        enable_caching=caching,
    )
    started = time.time()
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(open_log(log_file)) if log_file else None
        # progress bars only where a person watches (a terminal); a redirected console keeps whole lines
        bars = ConsoleProgress(sys.__stdout__) if progress and sys.__stdout__.isatty() else None
        records = stack.enter_context(runner_records(RunnerRecords(stream, progress, bars), verbose))
        stack.enter_context(kfp_local_session(stream, bars))
        stack.callback(write_metrics_files, root / ".kfp_cache")  # also after a failed run
        twt_distillation(**arguments)
    return run_outcome(
        root,
        started,
        registry_uri=arguments["registry_uri"],
        tasks=records.finished,  # kfp.local's own record of each executed task's status
        cache_hits=records.cache_hits,  # and of the tasks it answered from its cache
    )


def write_metrics_files(cache_root: Path) -> list[Path]:
    """Give every ``Metrics`` artifact of kfp.local's cache entries its file, which a component never writes
    (KFP keeps a Metrics artifact's numbers in its metadata): kfp.local takes an entry whose artifact file is
    missing for a cache miss, so without it every task that logs metrics would run again. The file holds
    the metadata. Returns the files written."""
    written = []
    for entry in sorted(cache_root.glob("*.json")):
        for output in json.loads(entry.read_text()).values():
            is_metrics = isinstance(output, dict) and output.get("schema_title") == "system.Metrics"
            path = Path(output.get("uri") or "") if is_metrics else None
            if path is not None and path.is_absolute() and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(output.get("metadata") or {}, indent=2) + "\n")
                written.append(path)
    return written


def run_outcome(root: Path, started: float, **extra) -> dict:
    """The run directory of the run started at ``started``, its seconds, ``extra``, and the promotion
    record or the rejection report's path."""
    seconds = round(time.time() - started, 1)
    run_dir = latest_run_dir(root, since=started - 1)
    result: dict = {"run_dir": str(run_dir), "seconds": seconds, **extra}
    promoted = run_dir / PROMOTE_TASK / "promoted" if run_dir else None
    if promoted is not None and promoted.is_file():
        result["promoted"] = read_json(promoted, "promotion record", dict)
    elif run_dir is not None and (run_dir / REJECT_TASK / "report").is_file():
        result["rejected"] = str(run_dir / REJECT_TASK / "report")
    return result


def run_demo_pipeline(
    config_path: str | os.PathLike, workdir: str | os.PathLike, verbose: bool = False
) -> dict:
    """``twt demo``'s pipeline runner (``twt.app.demo.PipelineRunner``): the pipeline through kfp.local under
    ``<workdir>/kfp`` with a short line per task on the console and kfp's own lines in ``tasks.log``;
    returns where the DCRS report, the evaluation metrics and the verdict are (this module knows the
    pipeline's task and output names, the library does not)."""
    kfp_root = Path(workdir) / "kfp"
    log = kfp_root / "tasks.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    result = run_local(
        config_path,
        kfp_root,
        registry_uri=str(Path(workdir) / "registry"),
        log_file=log,
        verbose=verbose,
        progress=True,
    )
    outputs = task_outputs(result)
    return {
        **result,
        "log": str(log),
        "dcrs_report": outputs("select-candidates", "report"),
        "metrics": str(Path(outputs("evaluate-students", "evaluation")) / "metrics.json"),
        "verdict": outputs("gate", "verdict"),
        "stage_models": {n: outputs(task, "model") for n, task in STAGE_TASKS.items()},
        "compression_report": outputs("compress-reasoning", "report"),
    }


def task_outputs(result: dict):
    """``(task, output) -> path`` for a ``run_local`` result: the run's own output, or for a task kfp.local
    answered from its cache, the artifact its cache entry (``<root>/.kfp_cache/<key>.json``) points to."""
    run_dir = Path(result["run_dir"])

    def find(task: str, output: str) -> str:
        key = result["cache_hits"].get(task)
        if key is None:
            return str(run_dir / task / output)
        entries = sorted((run_dir.parent / ".kfp_cache").glob(f"{key}*.json"))
        if len(entries) != 1:
            raise FileNotFoundError(f"kfp.local's cache entry {key}… of task {task!r}: found {len(entries)}")
        return json.loads(entries[0].read_text())[output]["uri"]

    return find
