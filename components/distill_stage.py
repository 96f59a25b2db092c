"""Component: one supervised fine-tuning stage of habitual reasoning distillation
(``twt.steps.steps.distill_stage``)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def distill_stage(
    settings: str,
    stage: int,
    s3_endpoint: str,
    rows: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    base_model: Input[Model] = None,
    compression_report: Input[Artifact] = None,
    run_id: str = "",
):
    """Train stage 1 (full reasoning), 2 (compressed reasoning) or 3 (answer only).

    Args:
        settings: This step's slice of the run configuration (twt.steps.settings), from resolve-settings.
        stage: 1, 2 or 3.
        s3_endpoint: Object store for s3:// URIs in the settings (TWT_S3_ENDPOINT); '' = from the environment.
        rows: Distillation rows (stage 1: DCRS output; stages 2, 3: compressed rows).
        model: The trained student (Hugging Face directory with twt.json lineage).
        metrics: Examples, updates, first and final loss, tokens per second.
        base_model: The previous stage's student; absent for stage 1 (the configured base).
        compression_report: The compression report, recorded in the lineage of stages 2 and 3.
        run_id: Names the checkpoint location and training job with the run name and stage, so a retry of
            this step resumes there; empty = the KFP_RUN_ID variable (the pipeline sets it from the pod's
            pipeline/runid label: an input would enter the cache key), else "local". The config's
            ``training`` section may send the training to a Kubeflow TrainJob/PyTorchJob
            (twt.training.launch).
    """
    from twt.steps import steps

    steps.distill_stage(
        settings,
        stage,
        rows.path,
        base_model.path if base_model is not None else None,
        model.path,
        compression_report.path if compression_report is not None else None,
        log_metric=metrics.log_metric,
        run_id=run_id or None,
        s3_endpoint=s3_endpoint,
    )
