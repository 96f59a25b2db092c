"""Component: the teachers' settings as a list, one item per sampling task
(``twt.steps.steps.teacher_settings``).

kfp 2.17's local runner loops only over a task's single output (``Output``), not over a named output of
``resolve-settings``; this step turns that output into one.
"""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def teacher_settings(sample: str) -> list:
    """One teacher's settings per item.

    Args:
        sample: resolve-settings' sample output (JSON list of the teachers' settings).

    Returns:
        The teachers' settings, one JSON text each.
    """
    from twt.steps import steps

    return steps.teacher_settings(sample)
