"""Cluster layout of the ``twt-distillation`` pipeline: pull secret, per-step accelerators, ``/dev/shm`` and
the model cache, applied to the tasks after the DAG is built (``apply_layout``, called once at the end
of the pipeline function).

- **Image pull secret** (``image_pull_secret``): every pod gets it in ``imagePullSecrets``. A Secret that
  does not exist only costs a warning event, so public images still pull with the default name.
- **Accelerators per step** (``<step>_accelerator_type`` / ``<step>_accelerator_limit`` for sampling,
  compression and evaluation; the training stages keep ``gpu_accelerator_*``). A limit of 0 requests no
  accelerator: ``python -m pipelines run`` sends 0 for sampling when every teacher is served over HTTP
  (``backend: openai``), and for compression or evaluation likewise (``accelerator_arguments``).
- **/dev/shm**: GPU-image steps mount a memory-backed emptyDir (``medium: Memory``, ``SHM_SIZE``) there:
  vLLM's tensor parallelism and data loaders need more than the container default of 64 MB. It counts
  against the step's memory limit. kfp-kubernetes 2.17 takes the size as a constant only.
- **Model cache** (``model_cache_pvc``): GPU-image steps and DCRS mount this PersistentVolumeClaim at the
  images' Hugging Face cache (``HF_HOME``), so teacher, student, reference and embedding weights are
  downloaded once per cluster, not once per run. KFP 2.17 cannot choose between a PVC and an emptyDir
  by a parameter (only by duplicating every task under ``dsl.If``), so the claim always exists:
  manifests/base creates ``twt-model-cache`` (ReadWriteMany, so parallel steps on several nodes share it).

Only tasks are touched; the DAG and the components are not.
"""

from __future__ import annotations

from collections.abc import Mapping

from kfp import dsl, kubernetes

from components.images import GPU_IMAGE

HF_HOME = "/home/twt/.cache/huggingface"  # the images' HF_HOME (images/*/Dockerfile)
SHM_SIZE = "16Gi"
MODEL_CACHE_PVC = "twt-model-cache"  # manifests/base/model-cache-pvc.yaml
IMAGE_PULL_SECRET = "twt-image-pull"
# Component name -> the step whose accelerator parameters it uses (the others: the training stages').
STEP_OF_COMPONENT = {
    "sample-teacher": "sample",
    "compress-reasoning": "compress",
    "evaluate-students": "eval",
}
CACHE_COMPONENTS = {"select-candidates"}  # CPU steps that load hub models too (the embedding model)


def pipeline_tasks() -> list[dsl.PipelineTask]:
    """Every task of the pipeline being built (inside a ``@dsl.pipeline`` function)."""
    from kfp.dsl.pipeline_context import Pipeline

    return list(Pipeline.get_default_pipeline().tasks.values())


def component_name(task: dsl.PipelineTask) -> str:
    return task.component_spec.name.replace("_", "-")


def on_gpu_image(task: dsl.PipelineTask) -> bool:
    container = task.component_spec.implementation.container
    return container is not None and container.image == GPU_IMAGE


def apply_layout(
    image_pull_secret,
    model_cache_pvc,
    accelerators: Mapping[str, tuple],
) -> None:
    """Apply the cluster layout (module docstring) to every task built so far. ``accelerators`` maps a
    step (``sample``, ``compress``, ``eval``) to its (type, limit) pipeline parameters."""
    for task in pipeline_tasks():
        kubernetes.set_image_pull_secrets(task, [image_pull_secret])
        name = component_name(task)
        if name in STEP_OF_COMPONENT:
            kind, limit = accelerators[STEP_OF_COMPONENT[name]]
            task.set_accelerator_type(kind).set_accelerator_limit(limit)
            # route the parameters into ParallelFor sub-DAGs (see pipelines.distillation._on_gpu)
            task.register_pipeline_channels([kind, limit])
        if on_gpu_image(task):
            kubernetes.empty_dir_mount(
                task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE
            )
        if on_gpu_image(task) or name in CACHE_COMPONENTS:
            kubernetes.mount_pvc(task, pvc_name=model_cache_pvc, mount_path=HF_HOME)


def accelerator_arguments(config) -> dict[str, int]:
    """Accelerator limits a configuration (``twt.config.RunConfig``) implies: no accelerator for sampling
    when every teacher is served over HTTP, none for compression when its rewriting teacher is. Other
    limits stay the pipeline's defaults (or ``--set``)."""
    arguments = {}
    if all(teacher.backend == "openai" for teacher in config.teachers):
        arguments["sample_accelerator_limit"] = 0
    if config.compression.method == "teacher" and config.compression_teacher().backend == "openai":
        arguments["compress_accelerator_limit"] = 0
    return arguments
