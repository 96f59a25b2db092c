"""Component: the promotion gate's verdict (``twt.steps.steps.gate``); its boolean drives the pipeline's
dsl.If."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate(
    settings: str,
    evaluation: Input[Artifact],
    verdict: Output[Artifact],
    report: Output[Markdown],
) -> NamedTuple("Outputs", [("passed", bool), ("student", str)]):
    """Apply the configured gate policy to the evaluated students.

    Args:
        settings: This step's slice of the run configuration (twt.steps.settings), from resolve-settings.
        evaluation: The evaluation directory (metrics.json).
        verdict: The verdict (JSON): passed, student, reasons, per-student checks.
        report: The evaluation report with the verdict.

    Returns:
        passed: Whether a student may be promoted.
        student: The chosen student (stage1, stage2 or stage3), or '' when none qualifies.
    """
    from twt.steps import steps

    passed, student = steps.gate(settings, evaluation.path, verdict.path, report.path, embed_plot=True)
    return (passed, student)
