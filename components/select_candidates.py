"""Component: dual-criteria rejection sampling over every teacher's candidates
(``twt.steps.steps.select_candidates``)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def select_candidates(
    settings: str,
    s3_endpoint: str,
    questions: Input[Dataset],
    candidates: Input[list[Dataset]],
    distill: Output[Dataset],
    report: Output[Artifact],
    metrics: Output[Metrics],
    summary: Output[Markdown],
):
    """DCRS: keep candidates that are right and confident, drop near-duplicate reasonings.

    Args:
        settings: This step's slice of the run configuration (twt.steps.settings), from resolve-settings.
        s3_endpoint: Object store for s3:// URIs in the settings (TWT_S3_ENDPOINT); '' = from the environment.
        questions: Training question rows (JSONL).
        candidates: The sampling tasks' candidate directories, one per teacher.
        distill: Distillation rows (JSONL).
        report: DCRS report (JSON): every candidate accounted for, per teacher and reason.
        metrics: Candidate counts in, rejected by quality, rejected by diversity, kept.
        summary: The report's counts per teacher and reason (Markdown, shown in the KFP UI).
    """
    from twt.steps import steps

    steps.select_candidates(
        settings,
        questions.path,
        [c.path for c in candidates],
        distill.path,
        report.path,
        log_metric=metrics.log_metric,
        s3_endpoint=s3_endpoint,
        markdown_out=summary.path,
    )
