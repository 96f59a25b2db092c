"""Component: k candidate reasoning paths per question from one teacher (``twt.tasks.sample``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def sample_teacher(
    config_yaml: str,
    teacher: str,
    questions: Input[Dataset],
    candidates: Output[Dataset],
    metrics: Output[Metrics],
):
    """Sample one teacher of the configuration on the training questions.

    Args:
        config_yaml: The run configuration (twt.config), as YAML text.
        teacher: Name of the teacher in the configuration.
        questions: Training question rows (JSONL).
        candidates: Directory <teacher>/ with the sampling shards, DONE.json and candidates.jsonl.
        metrics: Candidates, answers found, mean tokens and confidence.
    """
    from twt import tasks

    tasks.sample(config_yaml, teacher, questions.path, candidates.path, log_metric=metrics.log_metric)
