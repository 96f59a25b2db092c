"""Component: every stage's student and the baselines on the held-out questions
(``twt.steps.steps.evaluate_students``)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate_students(
    settings: str,
    s3_endpoint: str,
    eval_questions: Input[Dataset],
    stage1: Input[Model],
    stage2: Input[Model],
    stage3: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
):
    """Greedy answers of the students and baselines: accuracy, output tokens, tokens per correct answer.

    Args:
        settings: This step's slice of the run configuration (twt.steps.settings), from resolve-settings.
        s3_endpoint: Object store for s3:// URIs in the settings (TWT_S3_ENDPOINT); '' = from the environment.
        eval_questions: Held-out question rows with gold answers (JSONL).
        stage1: The stage-1 student.
        stage2: The stage-2 student.
        stage3: The stage-3 student.
        evaluation: Directory: metrics.json, answers/, models/, accuracy_vs_tokens.png, report.md.
        metrics: <model>_accuracy, <model>_mean_output_tokens, <model>_tokens_per_correct.
        report: The evaluation table and the accuracy-versus-tokens picture.
    """
    from twt.steps import steps

    steps.evaluate_students(
        settings,
        eval_questions.path,
        {"stage1": stage1.path, "stage2": stage2.path, "stage3": stage3.path},
        evaluation.path,
        markdown_out=report.path,
        log_metric=metrics.log_metric,
        s3_endpoint=s3_endpoint,
    )
