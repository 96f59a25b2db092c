"""Component: the training and held-out questions of a run (``twt.steps.steps.prepare_questions``)."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_questions(
    settings: str,
    s3_endpoint: str,
    train_questions: Output[Dataset],
    eval_questions: Output[Dataset],
    metrics: Output[Metrics],
):
    """Draw (embedded task) or copy (question files, local or s3://) the questions of the run.

    Args:
        settings: This step's slice of the run configuration (twt.steps.settings), from resolve-settings.
        s3_endpoint: Object store for s3:// question files (TWT_S3_ENDPOINT); '' = none.
        train_questions: Question rows the teachers solve (JSONL).
        eval_questions: Held-out question rows with gold answers (JSONL).
        metrics: How many questions of each kind.
    """
    from twt.steps import steps

    steps.prepare_questions(
        settings,
        train_questions.path,
        eval_questions.path,
        s3_endpoint=s3_endpoint,
        log_metric=metrics.log_metric,
    )
