"""The ``twt-distillation`` pipeline: the whole method as one Kubeflow Pipelines DAG.

    python -m pipelines compile                       # dist/twt-distillation-<version>.yaml
    python -m pipelines local --config configs/demo.yaml   # the same DAG on this machine

    resolve-settings ─► preflight ─► prepare-questions ─► ParallelFor(teachers): sample-teacher
      ─► Collected ─► select-candidates (DCRS) ─► distill-stage (1) ─► compress-reasoning
      ─► distill-stage-2 ─► distill-stage-3 ─► evaluate-students ─► gate
      ─► If passed: promote-student │ Else: explain-rejection

Placement. Sampling, the three training stages, compression and evaluation run on the GPU image. Each
of them takes its accelerators, CPU, memory, node selector and tolerations from its own parameters: the
training stages ``gpu_*``, the others ``sample_*``, ``compress_*`` and ``eval_*`` (``pipelines.layout``:
a step whose teacher is served over HTTP, or a stage that trains in a TrainJob/PyTorchJob, asks for no
accelerator and no GPU node). DCRS, the gate, promotion and the reports run on the CPU image. In kfp and
kfp-kubernetes 2.17 these take pipeline parameters: accelerator type and limit, CPU and memory
(``set_*``), the node selector (``add_node_selector_json``; ``add_node_selector`` takes constants only),
the tolerations (``add_toleration_json``; ``add_toleration`` constants only) and secret names
(``use_secret_as_env``). Constants, as the API requires: the key → variable maps inside each Secret
(``SECRET_KEYS``), the security context (uid 10001), emptyDir mounts, retries, caching, the images.
There is no priority-class setting at all (manifests/overlays/gpu's ``twt-gpu`` PriorityClass cannot be
requested from the SDK).

Object storage. Every task that can read or write ``s3://`` (questions, models, checkpoints, training jobs'
inputs, the registry; ``S3_TASKS``) gets the MinIO Secret's keys and the ``s3_endpoint`` parameter.

Run id. The training stages read the KFP run id from their pod's ``pipeline/runid`` label (``KFP_RUN_ID``,
a Downward API variable): it keys their checkpoints and training-job names, so two runs never share them,
while a retry of the step resumes its own. An environment variable is outside KFP's cache key, unlike an
input parameter (``RUN_ID_ENV``).

Secrets arrive as environment variables from Kubernetes Secrets whose NAMES are parameters
(``kfp.kubernetes.use_secret_as_env``); the spec never holds a credential. The keys inside each Secret
and the variables they become are compile-time constants in kfp-kubernetes 2.17 (``SECRET_KEYS``): the
MinIO Secret of manifests/base (``accesskey``/``secretkey``), a hub token (``token`` → ``HF_TOKEN``), and
teacher API keys stored under the names of the variables that the configuration's ``api_key_env`` names
(``TEACHER_KEY_ENVS``; ``python -m pipelines run`` refuses a configuration that names another one).

Pipeline root: the spec sets none, so a run's artifacts go where the namespace's ``kfp-launcher``
ConfigMap (``defaultPipelineRoot``, with its ``providers``) or the run itself says. The reports are
``Markdown`` artifacts there (the evaluation, the gate's verdict, DCRS, compression, preflight, why not
promoted), which the KFP UI renders only from a store it can read: KFP 2.17's UI server
(frontend/server/handlers/artifacts.ts) uses a namespace's provider credentials only in its own namespace
(standalone), elsewhere its own store's (KFP's default root, ``minio://mlpipeline/v2/artifacts``). Models
travel as ``Model`` artifacts through the root too (KFP 2.17's run workspace holds plain files, not typed
artifacts).
"""

import yaml
from kfp import dsl, kubernetes

from components.compress_reasoning import compress_reasoning
from components.distill_stage import distill_stage
from components.evaluate_students import evaluate_students
from components.explain_rejection import explain_rejection
from components.gate import gate
from components.images import GPU_IMAGE
from components.preflight import preflight
from components.prepare_questions import prepare_questions
from components.promote_student import promote_student
from components.resolve_settings import resolve_settings
from components.sample_teacher import sample_teacher
from components.select_candidates import select_candidates
from components.serve_student import serve_student as serve_student_component
from components.teacher_settings import teacher_settings
from pipelines.layout import (
    GPU_NODE_SELECTOR,
    GPU_TOLERATIONS,
    IMAGE_PULL_SECRET,
    MODEL_CACHE_PVC,
    apply_layout,
    component_name,
    pipeline_tasks,
)
from twt.core.load import default_config_path
from twt.core.schema import RunConfig
from twt.steps.parameters import pipeline_defaults

PIPELINE_NAME = "twt-distillation"
DEMO_CONFIG = default_config_path().read_text(encoding="utf-8")
# the typed parameters' defaults: the packaged demo configuration's values (validated here, at compile time)
DEFAULTS = pipeline_defaults(RunConfig.model_validate(yaml.safe_load(DEMO_CONFIG)))

# Variables a teacher's api_key_env may name: each is read from the key of the same name in the teacher
# API keys Secret (optional: a missing key leaves the variable unset). Add a name here and recompile.
TEACHER_KEY_ENVS = ("TEACHER_API_KEY", "OPENAI_API_KEY")
# Secret key -> environment variable, per Secret (constants in kfp-kubernetes 2.17).
SECRET_KEYS = {
    "minio": {"accesskey": "TWT_S3_ACCESS_KEY", "secretkey": "TWT_S3_SECRET_KEY"},
    "hf_token": {"token": "HF_TOKEN"},
    "teacher_keys": {name: name for name in TEACHER_KEY_ENVS},
    # Kubeflow Model Registry (twt.registry.kubeflow.SECRET_KEYS)
    "model_registry": {"address": "TWT_MODEL_REGISTRY_ADDRESS", "token": "TWT_MODEL_REGISTRY_TOKEN"},
}
RUN_AS = 10001  # the images' user (images/README.md)
# Tasks that can read or write s3:// (configuration, questions, models, checkpoints, a training job's inputs
# and output, the registry): each gets the MinIO Secret's keys and the s3_endpoint parameter.
S3_TASKS = {
    "resolve-settings",
    "preflight",
    "prepare-questions",
    "sample-teacher",
    "select-candidates",
    "distill-stage",
    "compress-reasoning",
    "evaluate-students",
    "promote-student",
}
# The KFP run id, for the training stages (twt.steps.steps.distill_stage reads KFP_RUN_ID). KFP 2.17's API
# server labels every pod of a run with it (backend/src/apiserver/template/v2_template.go:
# SetPodMetadataLabels("pipeline/runid", RunID)), the same id dsl.PIPELINE_JOB_ID_PLACEHOLDER resolves to.
# Passed as an input parameter it would enter the cache key (backend/src/v2/cacheutils/cache.go,
# GenerateCacheKey: input parameter and artifact names, output specs, image, command, args, PVC names; no
# environment), and every run would retrain from scratch.
RUN_ID_ENV = ("KFP_RUN_ID", "metadata.labels['pipeline/runid']")
IMAGE_ENV = (
    "TWT_IMAGE"  # the training steps' own image, for the training jobs they submit (twt.training.launch)
)
# The launcher keeps local copies of s3:// and minio:// artifacts under /s3 and /minio; a non-root user
# cannot create those at the file system root, so each task gets them as emptyDir volumes.
SCRATCH_MOUNTS = {"kfp-s3": "/s3", "kfp-minio": "/minio"}
# Retries: a preempted GPU node or a flaky teacher endpoint should not fail a run of hours.
SAMPLE_RETRY = {"num_retries": 3, "backoff_duration": "60s", "backoff_factor": 2.0}
TRAIN_RETRY = {"num_retries": 2, "backoff_duration": "120s", "backoff_factor": 2.0}
CPU_SMALL = {"cpu": "1", "memory": "2Gi"}  # questions, gate, promotion, reports
CPU_DCRS = {"cpu": "2", "memory": "8Gi"}  # sentence embeddings on CPU


def _common(task: dsl.PipelineTask, name: str, caching: bool) -> dsl.PipelineTask:
    """Display name, caching, non-root security context and launcher scratch space: every task."""
    task.set_display_name(name).set_caching_options(caching)
    kubernetes.set_security_context(task, run_as_user=RUN_AS, run_as_group=RUN_AS, run_as_non_root=True)
    for volume, path in SCRATCH_MOUNTS.items():
        kubernetes.empty_dir_mount(task, volume_name=volume, mount_path=path)
    return task


def _on_cpu(task: dsl.PipelineTask, resources: dict[str, str]) -> dsl.PipelineTask:
    task.set_cpu_request(resources["cpu"]).set_memory_request(resources["memory"])
    return task.set_memory_limit(resources["memory"])


def _on_gpu(task: dsl.PipelineTask, gpu: dict) -> dsl.PipelineTask:
    """Accelerators, CPU/memory, node selector and tolerations of the step's pool, all from parameters."""
    task.set_accelerator_type(gpu["accelerator_type"]).set_accelerator_limit(gpu["accelerator_limit"])
    task.set_cpu_request(gpu["cpu"]).set_memory_request(gpu["memory"]).set_memory_limit(gpu["memory"])
    # KFP 2.17 does not route parameters used only in resource settings into a dsl.ParallelFor's sub-DAG
    # (the loop's inputs lack them and the run fails: "Parent pipeline input argument
    # 'pipelinechannel--gpu_cpu' not found"). Registering them as the task's inputs routes them.
    task.register_pipeline_channels(
        [gpu[key] for key in ("accelerator_type", "accelerator_limit", "cpu", "memory")]
    )
    kubernetes.add_node_selector_json(task, gpu["node_selector"])
    kubernetes.add_toleration_json(task, gpu["tolerations"])
    return task


def _secret(task: dsl.PipelineTask, secret_name, which: str, optional: bool) -> dsl.PipelineTask:
    return kubernetes.use_secret_as_env(task, secret_name, SECRET_KEYS[which], optional=optional)


def _pool(parameters: dict, prefix: str) -> dict:
    """A step's placement parameters (``<prefix>_accelerator_type``, ...) by their role."""
    keys = ("accelerator_type", "accelerator_limit", "cpu", "memory", "node_selector", "tolerations")
    return {key: parameters[f"{prefix}_{key}"] for key in keys}


@dsl.pipeline(name=PIPELINE_NAME)
def twt_distillation(
    run_name: str = DEFAULTS["run_name"],
    teachers: list = DEFAULTS["teachers"],
    dcrs_quality_threshold: float = DEFAULTS["dcrs_quality_threshold"],
    dcrs_similarity_threshold: float = DEFAULTS["dcrs_similarity_threshold"],
    compression: dict = DEFAULTS["compression"],
    stage1_epochs: float = DEFAULTS["stage1_epochs"],
    stage1_updates: int = DEFAULTS["stage1_updates"],
    stage1_learning_rate: float = DEFAULTS["stage1_learning_rate"],
    stage2_epochs: float = DEFAULTS["stage2_epochs"],
    stage2_updates: int = DEFAULTS["stage2_updates"],
    stage2_learning_rate: float = DEFAULTS["stage2_learning_rate"],
    stage3_epochs: float = DEFAULTS["stage3_epochs"],
    stage3_updates: int = DEFAULTS["stage3_updates"],
    stage3_learning_rate: float = DEFAULTS["stage3_learning_rate"],
    gate_min_accuracy: float = DEFAULTS["gate_min_accuracy"],
    gate_max_accuracy_drop: float = DEFAULTS["gate_max_accuracy_drop"],
    gate_min_token_reduction: float = DEFAULTS["gate_min_token_reduction"],
    registry_uri: str = DEFAULTS["registry_uri"],
    registry_model_name: str = DEFAULTS["registry_model_name"],
    registry_tags: list = DEFAULTS["registry_tags"],
    student_model: str = DEFAULTS["student_model"],
    questions_uri: str = DEFAULTS["questions_uri"],
    eval_uri: str = DEFAULTS["eval_uri"],
    config_override: str = "",
    s3_endpoint: str = "http://minio.twt.svc.cluster.local:9000",
    minio_secret: str = "twt-minio-credentials",
    hf_token_secret: str = "twt-hf-token",
    teacher_keys_secret: str = "twt-teacher-api-keys",
    gpu_accelerator_type: str = "nvidia.com/gpu",
    gpu_accelerator_limit: int = 1,
    gpu_cpu: str = "8",
    gpu_memory: str = "64Gi",
    gpu_node_selector: dict = GPU_NODE_SELECTOR,
    gpu_tolerations: list = GPU_TOLERATIONS,
    sample_accelerator_type: str = "nvidia.com/gpu",
    sample_accelerator_limit: int = 1,
    sample_cpu: str = "8",
    sample_memory: str = "64Gi",
    sample_node_selector: dict = GPU_NODE_SELECTOR,
    sample_tolerations: list = GPU_TOLERATIONS,
    compress_accelerator_type: str = "nvidia.com/gpu",
    compress_accelerator_limit: int = 1,
    compress_cpu: str = "8",
    compress_memory: str = "64Gi",
    compress_node_selector: dict = GPU_NODE_SELECTOR,
    compress_tolerations: list = GPU_TOLERATIONS,
    eval_accelerator_type: str = "nvidia.com/gpu",
    eval_accelerator_limit: int = 1,
    eval_cpu: str = "8",
    eval_memory: str = "64Gi",
    eval_node_selector: dict = GPU_NODE_SELECTOR,
    eval_tolerations: list = GPU_TOLERATIONS,
    image_pull_secret: str = IMAGE_PULL_SECRET,
    model_cache_pvc: str = MODEL_CACHE_PVC,
    model_registry_secret: str = "twt-model-registry",
    serve_student: bool = False,
    serving_runtime: str = "twt-vllm",
    serving_service_account: str = "twt-kserve",
):
    """Distil several teachers' reasoning into a student that answers with far fewer tokens (twt).

    Samples every teacher, selects candidates by DCRS, trains three stages (full, compressed, no
    reasoning), evaluates them against the baselines, and promotes the gate's student to the registry,
    or reports why not. The first task (resolve settings) validates the parameters and gives each step only
    the settings it uses, so a changed gate threshold reruns the gate and promotion, not sampling or training.
    Defaults: the packaged demo configuration (tiny models in the image).

    Args:
        run_name: Name of the run (letters, digits, '.', '_', '-'); recorded in the students' lineage.
        teachers: The teachers, a JSON list of objects with name, model (path, URI or hub id; for backend
            openai the served model), backend (transformers, vllm or openai), k (samples per question) and
            temperature; optional: top_p, max_new_tokens, seed, batch_size, dtype, tensor_parallel_size,
            base_url, api_key_env (openai), prompts. One sampling task each.
        dcrs_quality_threshold: DCRS quality threshold tau in [0, 1]: candidates scoring below are dropped.
        dcrs_similarity_threshold: DCRS similarity threshold in [0, 1]: a reasoning this cosine-similar to a
            kept one of the same question is a duplicate.
        compression: Stage-2 compression, a JSON object: method (teacher, cts or unconditional) and its
            settings: teacher (method teacher: a teacher name); ratio, reference_model, window (cts,
            unconditional); condition (cts). A setting the method does not use is refused.
        stage1_epochs: Stage 1 (full reasoning): passes over the rows.
        stage1_updates: Stage 1: budget in optimiser updates instead of epochs; 0 = by epochs.
        stage1_learning_rate: Stage 1: peak learning rate.
        stage2_epochs: Stage 2 (compressed reasoning): passes over the rows.
        stage2_updates: Stage 2: budget in optimiser updates; 0 = by epochs.
        stage2_learning_rate: Stage 2: peak learning rate.
        stage3_epochs: Stage 3 (answer only): passes over the rows.
        stage3_updates: Stage 3: budget in optimiser updates; 0 = by epochs.
        stage3_learning_rate: Stage 3: peak learning rate.
        gate_min_accuracy: Gate: the promoted student's accuracy at least this, in [0, 1]; negative = not
            checked.
        gate_max_accuracy_drop: Gate: accuracy at most this far (absolute) below stage 1's; negative = not
            checked.
        gate_min_token_reduction: Gate: mean output tokens at least this fraction below stage 1's; negative =
            not checked.
        registry_uri: Where the promoted student is published, s3://bucket/prefix or a directory. The
            default s3://twt-registry is the bucket manifests/base creates; with a config_override that sets
            registry.uri, the default keeps the file's value.
        registry_model_name: Registered model name (lower case, digits, '.', '_', '-').
        registry_tags: Labels recorded with the published version, a JSON list of strings.
        student_model: The student base that the stages fine-tune: a Hugging Face id (e.g.
            Qwen/Qwen2.5-0.5B-Instruct), an s3:// URI or a path in the image.
        questions_uri: Training questions, an s3:// URI (or path) of a JSONL file of {"id", "question",
            "answer"?} rows; '' = the embedded task. Give eval_uri with it.
        eval_uri: Held-out questions with gold answers, an s3:// URI (or path) of a JSONL file of {"id",
            "question", "answer"} rows; '' = the embedded task.
        config_override: Optional whole configuration (twt.core.schema): YAML text on one line (flow style,
            e.g. {name: run1, teachers: [...], student: {model: org/m}}), or an s3:// URI (or path) of a YAML
            file, fetched by the first step; it supplies every setting without a parameter (evaluation,
            training, ...). A parameter changed from its default overrides the file's value; one left at its
            default keeps it.
        s3_endpoint: Object store of every s3:// URI (questions, models, checkpoints, configurations, the
            registry; TWT_S3_ENDPOINT), host:port or http(s)://host:port.
        minio_secret: Name of the Secret with the object store keys 'accesskey' and 'secretkey'
            (manifests/base: twt-minio-credentials).
        hf_token_secret: Name of the Secret whose key 'token' becomes HF_TOKEN for gated hub models (optional
            Secret).
        teacher_keys_secret: Name of the Secret holding teacher API keys under the variable names teachers'
            api_key_env use (TEACHER_API_KEY, OPENAI_API_KEY; optional Secret).
        gpu_accelerator_type: Accelerator resource of the training stages, e.g. nvidia.com/gpu.
        gpu_accelerator_limit: Accelerators per training stage; 0 when the stages train in a TrainJob or
            PyTorchJob (the step pod only waits; python -m pipelines run sets 0, and the pool below, then).
        gpu_cpu: CPU request of each training stage, e.g. 8.
        gpu_memory: Memory request and limit of each training stage, e.g. 64Gi.
        gpu_node_selector: Node selector of the GPU node pool, a JSON object of labels. The default
            nvidia.com/gpu.present=true is the label NVIDIA's GPU operator (GPU feature discovery) puts on
            GPU nodes; on GKE e.g. {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}; {} = any node.
        gpu_tolerations: Tolerations for the GPU nodes' taints, a JSON list of {key, operator, value, effect}.
            The default tolerates any nvidia.com/gpu:NoSchedule taint (operator Exists: the GPU operator's
            and GKE's nvidia.com/gpu=present alike); [] = none.
        sample_accelerator_type: Accelerator resource of the teacher sampling steps (vLLM or transformers).
        sample_accelerator_limit: Accelerators per sampling step; 0 when every teacher is served over HTTP
            (python -m pipelines run then also sets the sample_* pool to a small CPU pod on any node).
        sample_cpu: CPU request of each sampling step.
        sample_memory: Memory request and limit of each sampling step.
        sample_node_selector: Node selector of the sampling steps (as gpu_node_selector); {} = any node.
        sample_tolerations: Tolerations of the sampling steps (as gpu_tolerations); [] = none.
        compress_accelerator_type: Accelerator resource of the compression step.
        compress_accelerator_limit: Accelerators of the compression step; 0 when its teacher is served over
            HTTP (python -m pipelines run then also sets the compress_* pool off the GPU nodes).
        compress_cpu: CPU request of the compression step.
        compress_memory: Memory request and limit of the compression step.
        compress_node_selector: Node selector of the compression step; {} = any node.
        compress_tolerations: Tolerations of the compression step; [] = none.
        eval_accelerator_type: Accelerator resource of the evaluation step.
        eval_accelerator_limit: Accelerators of the evaluation step.
        eval_cpu: CPU request of the evaluation step.
        eval_memory: Memory request and limit of the evaluation step.
        eval_node_selector: Node selector of the evaluation step; {} = any node.
        eval_tolerations: Tolerations of the evaluation step; [] = none.
        image_pull_secret: Name of the docker-registry Secret every pod pulls its image with (a missing
            Secret is only a warning: public images pull without it).
        model_cache_pvc: PersistentVolumeClaim mounted as the Hugging Face cache of the GPU steps and DCRS
            (manifests/base creates twt-model-cache, ReadWriteMany).
        model_registry_secret: Name of the Secret with Kubeflow Model Registry's 'address' (host:port or
            https://host) and 'token'; promotion registers the student there when it has an address
            (optional Secret).
        serve_student: After promotion, serve the student with a KServe InferenceService (vLLM) in the run's
            namespace, on the evaluation step's GPU pool (eval_accelerator_type, eval_node_selector,
            eval_tolerations), downloaded from the registry; off by default.
        serving_runtime: KServe serving runtime of the student: twt-vllm (manifests' vLLM ServingRuntime)
            or kserve-huggingfaceserver (KServe's own, with its vLLM backend).
        serving_service_account: Service account of the InferenceService; its Secrets give KServe's
            storage initializer the S3 endpoint and keys (manifests: twt-kserve).
    """
    parameters = dict(locals())
    pools = {prefix: _pool(parameters, prefix) for prefix in ("gpu", "sample", "compress", "eval")}

    # resolve-settings takes the typed parameters, config_override and s3_endpoint under their own names
    resolved = resolve_settings(**{name: parameters[name] for name in resolve_settings.component_spec.inputs})
    # always recomputed (an override URI's content can change); its outputs are what the steps' caches key on
    _on_cpu(_common(resolved, "resolve settings", caching=False), CPU_SMALL)
    step = resolved.outputs

    # every later task waits for it: a missing Secret, an unreachable MinIO or teacher, an unbound cache or
    # a missing training-job API fails the run here, in one line each, before any GPU is requested
    checked = preflight(
        settings=step["preflight"],
        s3_endpoint=s3_endpoint,
        model_cache_pvc=model_cache_pvc,
        minio_secret=minio_secret,
        teacher_keys_secret=teacher_keys_secret,
    )
    _on_cpu(_common(checked, "preflight", caching=False), CPU_SMALL)
    _secret(checked, teacher_keys_secret, "teacher_keys", optional=True)

    questions = prepare_questions(settings=step["prepare_questions"], s3_endpoint=s3_endpoint).after(checked)
    _on_cpu(_common(questions, "questions", caching=True), CPU_SMALL)

    teacher_list = teacher_settings(sample=step["sample_teacher"]).after(checked)
    _on_cpu(_common(teacher_list, "teachers", caching=False), CPU_SMALL)

    with dsl.ParallelFor(teacher_list.output, name="teachers") as teacher:
        sampled = sample_teacher(
            settings=teacher, s3_endpoint=s3_endpoint, questions=questions.outputs["train_questions"]
        )
        _on_gpu(_common(sampled, "sample teacher", caching=True), pools["sample"]).set_retry(**SAMPLE_RETRY)
        _secret(sampled, hf_token_secret, "hf_token", optional=True)
        _secret(sampled, teacher_keys_secret, "teacher_keys", optional=True)

    dcrs = select_candidates(
        settings=step["select_candidates"],
        s3_endpoint=s3_endpoint,
        questions=questions.outputs["train_questions"],
        candidates=dsl.Collected(sampled.outputs["candidates"]),
    )
    _on_cpu(_common(dcrs, "DCRS", caching=True), CPU_DCRS)
    _secret(dcrs, hf_token_secret, "hf_token", optional=True)

    stage1 = distill_stage(
        settings=step["stage1"], stage=1, s3_endpoint=s3_endpoint, rows=dcrs.outputs["distill"]
    )
    compressed = compress_reasoning(
        settings=step["compress_reasoning"],
        s3_endpoint=s3_endpoint,
        rows=dcrs.outputs["distill"],
        stage1_model=stage1.outputs["model"],
    )
    stage2 = distill_stage(
        settings=step["stage2"],
        stage=2,
        s3_endpoint=s3_endpoint,
        rows=compressed.outputs["compressed"],
        base_model=stage1.outputs["model"],
        compression_report=compressed.outputs["report"],
    )
    stage3 = distill_stage(
        settings=step["stage3"],
        stage=3,
        s3_endpoint=s3_endpoint,
        rows=compressed.outputs["compressed"],
        base_model=stage2.outputs["model"],
        compression_report=compressed.outputs["report"],
    )
    for task, name in (
        (stage1, "stage 1: full reasoning"),
        (stage2, "stage 2: compressed reasoning"),
        (stage3, "stage 3: answer only"),
    ):
        _on_gpu(_common(task, name, caching=True), pools["gpu"]).set_retry(**TRAIN_RETRY)
        _secret(task, hf_token_secret, "hf_token", optional=True)
        # a stage that outgrows the pod runs as a TrainJob/PyTorchJob on the step's own image (compile-time
        # retargeting to another registry rewrites this value with the executor's image)
        task.set_env_variable(IMAGE_ENV, GPU_IMAGE)
        kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV[0], field_path=RUN_ID_ENV[1])
    _on_gpu(_common(compressed, "compress reasoning", caching=True), pools["compress"])
    compressed.set_retry(**SAMPLE_RETRY)
    _secret(compressed, hf_token_secret, "hf_token", optional=True)
    _secret(compressed, teacher_keys_secret, "teacher_keys", optional=True)

    students = {
        "stage1": stage1.outputs["model"],
        "stage2": stage2.outputs["model"],
        "stage3": stage3.outputs["model"],
    }
    evaluated = evaluate_students(
        settings=step["evaluate_students"],
        s3_endpoint=s3_endpoint,
        eval_questions=questions.outputs["eval_questions"],
        **students,
    )
    _on_gpu(_common(evaluated, "evaluate", caching=True), pools["eval"])
    _secret(evaluated, hf_token_secret, "hf_token", optional=True)
    _secret(evaluated, teacher_keys_secret, "teacher_keys", optional=True)

    verdict = gate(settings=step["gate"], evaluation=evaluated.outputs["evaluation"])
    _on_cpu(_common(verdict, "gate", caching=True), CPU_SMALL)

    with dsl.If(verdict.outputs["passed"] == True, name="gate-passed"):  # noqa: E712 - a KFP condition
        promoted = promote_student(
            settings=step["promote_student"],
            s3_endpoint=s3_endpoint,
            verdict=verdict.outputs["verdict"],
            evaluation=evaluated.outputs["evaluation"],
            dcrs_report=dcrs.outputs["report"],
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            storage_key=minio_secret,
            **students,
        )
        # publishing is a side effect: never replace it by a cached result
        _on_cpu(_common(promoted, "promote", caching=False), CPU_SMALL)
        _secret(promoted, model_registry_secret, "model_registry", optional=True)
        with dsl.If(serve_student == True, name="serve-student"):  # noqa: E712 - a KFP condition
            served = serve_student_component(
                promoted=promoted.outputs["promoted"],
                runtime=serving_runtime,
                service_account=serving_service_account,
                accelerator_type=eval_accelerator_type,
                node_selector=eval_node_selector,
                tolerations=eval_tolerations,
            )
            # creating or updating the service is a side effect: never cached
            _on_cpu(_common(served, "serve student", caching=False), CPU_SMALL)
    with dsl.Else(name="gate-failed"):
        rejected = explain_rejection(
            settings=step["explain_rejection"],
            verdict=verdict.outputs["verdict"],
            evaluation=evaluated.outputs["evaluation"],
        )
        _on_cpu(_common(rejected, "why not promoted", caching=False), CPU_SMALL)

    for task in pipeline_tasks():
        if component_name(task) in S3_TASKS:
            _secret(task, minio_secret, "minio", optional=component_name(task) != "promote-student")
    apply_layout(image_pull_secret, model_cache_pvc)
