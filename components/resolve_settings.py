"""Component: the run's configuration, validated once, cut into each step's settings
(``twt.steps.steps.resolve_settings``)."""

from typing import NamedTuple

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def resolve_settings(
    config_override: str,
    s3_endpoint: str,
    run_name: str,
    teachers: list,
    dcrs_quality_threshold: float,
    dcrs_similarity_threshold: float,
    compression: dict,
    stage1_epochs: float,
    stage1_updates: int,
    stage1_learning_rate: float,
    stage2_epochs: float,
    stage2_updates: int,
    stage2_learning_rate: float,
    stage3_epochs: float,
    stage3_updates: int,
    stage3_learning_rate: float,
    gate_min_accuracy: float,
    gate_max_accuracy_drop: float,
    gate_min_token_reduction: float,
    registry_uri: str,
    registry_model_name: str,
    registry_tags: list,
    student_model: str,
    questions_uri: str,
    eval_uri: str,
) -> NamedTuple(
    "Outputs",
    [
        ("preflight", str),
        ("prepare_questions", str),
        ("sample_teacher", str),
        ("select_candidates", str),
        ("stage1", str),
        ("compress_reasoning", str),
        ("stage2", str),
        ("stage3", str),
        ("evaluate_students", str),
        ("gate", str),
        ("promote_student", str),
        ("explain_rejection", str),
    ],
):
    """Apply the typed pipeline parameters to the configuration and hand each step only its settings.

    Args:
        config_override: A whole configuration (YAML text, or a path or s3:// URI of one); '' = the defaults.
        s3_endpoint: Object store for an s3:// config_override (TWT_S3_ENDPOINT); '' = from the environment.
        run_name: The pipeline parameter of that name (see the pipeline's docstring); likewise below.
        teachers: Teachers.
        dcrs_quality_threshold: DCRS quality threshold.
        dcrs_similarity_threshold: DCRS similarity threshold.
        compression: Compression method and settings.
        stage1_epochs: Stage 1 epochs.
        stage1_updates: Stage 1 updates.
        stage1_learning_rate: Stage 1 learning rate.
        stage2_epochs: Stage 2 epochs.
        stage2_updates: Stage 2 updates.
        stage2_learning_rate: Stage 2 learning rate.
        stage3_epochs: Stage 3 epochs.
        stage3_updates: Stage 3 updates.
        stage3_learning_rate: Stage 3 learning rate.
        gate_min_accuracy: Gate minimum accuracy.
        gate_max_accuracy_drop: Gate maximum accuracy drop.
        gate_min_token_reduction: Gate minimum token reduction.
        registry_uri: Registry root.
        registry_model_name: Registered model name.
        registry_tags: Labels of the published version.
        student_model: The student base model.
        questions_uri: Training question file ('' = the configuration's task).
        eval_uri: Held-out question file ('' = the configuration's task).

    Returns (each JSON text of a twt.steps.settings model, in twt.steps.settings.STEPS order):
        preflight: The s3:// URIs, HTTP teachers and training launch the preflight checks.
        prepare_questions: Where the questions come from (task).
        sample_teacher: One settings object per teacher, for the sampling loop.
        select_candidates: DCRS settings and the teachers' names.
        stage1: Stage 1's training settings and lineage.
        compress_reasoning: The compression method and its settings.
        stage2: Stage 2's training settings and lineage.
        stage3: Stage 3's training settings and lineage.
        evaluate_students: Evaluation settings and baselines.
        gate: The gate policy.
        promote_student: The registry settings.
        explain_rejection: The gate policy and run name, for the rejection report.
    """
    from twt.steps import steps

    arguments = {name: value for name, value in locals().items() if name != "steps"}
    return steps.resolve_settings(arguments)
