"""Component: publish the gate's student to the registry and pull it back verified
(``twt.steps.steps.promote_student``)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def promote_student(
    settings: str,
    s3_endpoint: str,
    verdict: Input[Artifact],
    evaluation: Input[Artifact],
    dcrs_report: Input[Artifact],
    stage1: Input[Model],
    stage2: Input[Model],
    stage3: Input[Model],
    promoted: Output[Artifact],
    pipeline_run_id: str = "",
    storage_key: str = "",
) -> NamedTuple("Outputs", [("ref", str), ("uri", str)]):
    """Publish an immutable, versioned student with checksums, metrics, verdict, lineage and model card.

    Args:
        settings: This step's slice of the run configuration (twt.steps.settings), from resolve-settings.
        s3_endpoint: Object store for s3:// registries (TWT_S3_ENDPOINT); '' = from the environment.
        verdict: The gate's verdict (names the student).
        evaluation: The evaluation directory (metrics.json).
        dcrs_report: The DCRS report (recorded in the lineage).
        stage1: The stage-1 student.
        stage2: The stage-2 student.
        stage3: The stage-3 student.
        promoted: The record (JSON): model, version, ref, uri, student, verified.
        pipeline_run_id: The KFP run id (dsl.PIPELINE_JOB_ID_PLACEHOLDER): Kubeflow Model Registry keeps one
            version per run.
        storage_key: The Secret with the object store's keys (the minio_secret parameter): Kubeflow Model
            Registry records it as the artifact's storage_key, so a server can read the model.

    Returns:
        ref: The published version, <model>@<version>.
        uri: Where it lives in the registry.
    """
    from twt.steps import steps

    record = steps.promote_student(
        settings,
        verdict.path,
        evaluation.path,
        {"stage1": stage1.path, "stage2": stage2.path, "stage3": stage3.path},
        dcrs_report.path,
        promoted_out=promoted.path,
        s3_endpoint=s3_endpoint,
        run_id=pipeline_run_id,
        storage_key=storage_key,
    )
    return (record["ref"], record["uri"])
