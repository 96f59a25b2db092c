"""Component: the run's checks before any GPU work, one line per failure (``twt.steps.steps.preflight``)."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def preflight(
    settings: str,
    s3_endpoint: str,
    model_cache_pvc: str,
    minio_secret: str,
    teacher_keys_secret: str,
    report: Output[Markdown],
):
    """Secrets present, MinIO reachable, HTTP teachers answering, the model cache bound, the training-job API
    served when the stages train in a TrainJob/PyTorchJob. Fails the run, naming each problem, before any
    GPU step starts.

    Args:
        settings: This step's slice of the run configuration (twt.steps.settings), from resolve-settings.
        s3_endpoint: Object store of the run's s3:// URIs (TWT_S3_ENDPOINT).
        model_cache_pvc: The model cache PersistentVolumeClaim that must be bound.
        minio_secret: Name of the MinIO Secret (named in the failure line when its keys are missing).
        teacher_keys_secret: Name of the teacher API keys Secret (likewise).
        report: The checks and their outcome.
    """
    from twt.steps import steps

    steps.preflight(
        settings,
        report.path,
        s3_endpoint=s3_endpoint,
        model_cache_pvc=model_cache_pvc,
        minio_secret=minio_secret,
        teacher_keys_secret=teacher_keys_secret,
    )
