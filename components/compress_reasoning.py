"""Component: the stage-2 data, every kept reasoning compressed (``twt.steps.steps.compress_reasoning``)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def compress_reasoning(
    settings: str,
    s3_endpoint: str,
    rows: Input[Dataset],
    stage1_model: Input[Model],
    compressed: Output[Dataset],
    report: Output[Artifact],
    metrics: Output[Metrics],
    summary: Output[Markdown],
):
    """Compress each reasoning: teacher-guided rewrite, CTS or unconditional token selection.

    Args:
        settings: This step's slice of the run configuration (twt.steps.settings), from resolve-settings.
        s3_endpoint: Object store for s3:// URIs in the settings (TWT_S3_ENDPOINT); '' = from the environment.
        rows: Distillation rows from DCRS (JSONL).
        stage1_model: The stage-1 student (its attempts guide the teacher; CTS scores with it).
        compressed: Distillation rows with compressed_reasoning (JSONL).
        report: Compression report (JSON): lengths, ratio, rejections.
        metrics: Rows in and out, lengths in and out, achieved ratio.
        summary: The compression in and out, the ratio and rejections (Markdown, shown in the KFP UI).
    """
    from twt.steps import steps

    steps.compress_reasoning(
        settings,
        rows.path,
        stage1_model.path,
        compressed.path,
        report.path,
        log_metric=metrics.log_metric,
        s3_endpoint=s3_endpoint,
        markdown_out=summary.path,
    )
