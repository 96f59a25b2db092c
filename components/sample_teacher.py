"""Component: k candidate reasoning paths per question from one teacher
(``twt.steps.steps.sample_teacher``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def sample_teacher(
    settings: str,
    s3_endpoint: str,
    questions: Input[Dataset],
    candidates: Output[Dataset],
    metrics: Output[Metrics],
):
    """Sample one teacher on the training questions.

    Args:
        settings: One teacher's slice ({"teacher": {...}}, twt.steps.settings.SampleSettings), from
            resolve-settings.
        s3_endpoint: Object store for s3:// URIs in the settings (TWT_S3_ENDPOINT); '' = from the environment.
        questions: Training question rows (JSONL).
        candidates: Directory <teacher>/ with the sampling shards, DONE.json and candidates.jsonl.
        metrics: Candidates, answers found, mean tokens and confidence.
    """
    from twt.steps import steps

    steps.sample_teacher(
        settings,
        questions.path,
        candidates.path,
        log_metric=metrics.log_metric,
        s3_endpoint=s3_endpoint,
    )
