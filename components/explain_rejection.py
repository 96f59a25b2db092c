"""Component: why the gate refused promotion, as a Markdown report (``twt.steps.steps.explain_rejection``)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def explain_rejection(
    settings: str,
    verdict: Input[Artifact],
    evaluation: Input[Artifact],
    report: Output[Markdown],
):
    """Report the gate's reasons, the policy, each student's checks and the evaluation table.

    Args:
        settings: This step's slice of the run configuration (twt.steps.settings), from resolve-settings.
        verdict: The gate's verdict.
        evaluation: The evaluation directory (metrics.json).
        report: Why nothing was promoted.
    """
    from twt.steps import steps

    steps.explain_rejection(settings, verdict.path, evaluation.path, report.path)
