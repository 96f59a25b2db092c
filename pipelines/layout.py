"""Cluster layout of the ``twt-distillation`` pipeline: pull secret, per-step accelerators, ``/dev/shm`` and
the model cache, applied to the tasks after the DAG is built (``apply_layout``, called once at the end
of the pipeline function).

- **Image pull secret** (``image_pull_secret``): every pod gets it in ``imagePullSecrets``. A Secret that
  does not exist only costs a warning event, so public images still pull with the default name.
- **Placement per step** (``<step>_accelerator_type``, ``_accelerator_limit``, ``_cpu``, ``_memory``,
  ``_node_selector``, ``_tolerations`` for ``sample``, ``compress`` and ``eval``; the training stages
  ``gpu_*``), set by ``pipelines.distillation``. A limit of 0 requests no accelerator. ``python -m pipelines
  run`` sends ``accelerator_arguments``: a step whose teacher is served over HTTP (``backend: openai``)
  gets 0 accelerators and ``NO_GPU_POOL`` (no GPU node selector or toleration, a small CPU pod), and so do
  the training stages when they train in a TrainJob/PyTorchJob: the step pod then only submits and waits.
  KFP 2.17 cannot derive a task's resources from a value computed during the run without duplicating the
  task under ``dsl.If``, so these stay parameters, which the UI shows too.
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

from kfp import dsl, kubernetes

from components.images import GPU_IMAGE

HF_HOME = "/home/twt/.cache/huggingface"  # the images' HF_HOME (images/*/Dockerfile)
SHM_SIZE = "16Gi"
MODEL_CACHE_PVC = "twt-model-cache"  # manifests/base/model-cache-pvc.yaml
IMAGE_PULL_SECRET = "twt-image-pull"
# Component name -> the step whose accelerator parameters it uses (the others: the training stages').
# The GPU pool's defaults. nvidia.com/gpu.present=true: the label NVIDIA GPU feature discovery (GPU operator)
# puts on GPU nodes. The toleration matches any value of the nvidia.com/gpu:NoSchedule taint (the GPU
# operator's, and GKE's nvidia.com/gpu=present): operator Exists, not Equal.
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
# A step that needs no accelerator: any node, no GPU taint tolerated, a small CPU pod.
NO_GPU_POOL = {"accelerator_limit": 0, "cpu": "2", "memory": "8Gi", "node_selector": {}, "tolerations": []}
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


def apply_layout(image_pull_secret, model_cache_pvc) -> None:
    """Apply the cluster layout (module docstring) to every task built so far."""
    for task in pipeline_tasks():
        kubernetes.set_image_pull_secrets(task, [image_pull_secret])
        name = component_name(task)
        if on_gpu_image(task):
            kubernetes.empty_dir_mount(
                task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE
            )
        if on_gpu_image(task) or name in CACHE_COMPONENTS:
            kubernetes.mount_pvc(task, pvc_name=model_cache_pvc, mount_path=HF_HOME)


def accelerator_arguments(config) -> dict[str, object]:
    """Placement parameters a configuration (``twt.core.schema.RunConfig``) implies: ``NO_GPU_POOL`` for
    sampling when every teacher is served over HTTP, for compression when its rewriting teacher is, and for
    the training stages (``gpu_*``) when they train in a Kubeflow TrainJob/PyTorchJob (``training.engine``;
    ``twt.training.launch.choose_engine`` inside a cluster). Other steps keep the pipeline's defaults (or
    ``--set``)."""
    from twt.training.launch import choose_engine

    steps = []
    if all(teacher.backend == "openai" for teacher in config.teachers):
        steps.append("sample")
    if config.compression.method == "teacher" and config.compression_teacher().backend == "openai":
        steps.append("compress")
    if choose_engine(config.training, in_cluster=True).endswith("job"):
        steps.append("gpu")
    return {f"{step}_{key}": value for step in steps for key, value in NO_GPU_POOL.items()}
