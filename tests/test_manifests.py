"""Render the kustomize overlays in manifests/ and validate them.

    python -m pytest tests/test_manifests.py -q

Needs `kubectl` with a built-in kustomize >= v4 (`.ci/install-tools.sh`); skips without it, fails without it
in CI. Core kinds are validated with kubernetes-validate against the schemas of one pinned Kubernetes release,
in strict mode (unknown fields fail). KServe's CRD kinds have no schema there: they are listed in CRD_KINDS
and checked field by field instead (test_crd_documents_by_hand).
"""

from __future__ import annotations

import base64
import copy
import functools
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from missing_tools import kubectl_or_skip

from pipelines.distillation import RUN_AS, twt_distillation
from pipelines.layout import MODEL_CACHE_PVC

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ("dev", "gpu", "profile", "standalone")
KUBERNETES_VERSION = "1.30.0"
NAMESPACE = "twt"
KFP_NAMESPACE = "kubeflow"  # standalone KFP runs every workflow in its own namespace
NAMESPACES = {"dev": NAMESPACE, "gpu": NAMESPACE, "profile": NAMESPACE, "standalone": KFP_NAMESPACE}
# Kinds without a schema in kubernetes-validate, by overlay; everything else must validate.
CRD_KINDS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"),
    ("kubeflow.org/v1", "Profile"),
    ("security.istio.io/v1beta1", "PeerAuthentication"),
    ("security.istio.io/v1beta1", "AuthorizationPolicy"),
}
GPU_CRD_DOCUMENTS = {
    "ServingRuntime/twt-vllm",
    "InferenceService/teacher-example",
    "TrainingRuntime/twt-torch-distributed",
}
EXPECTED_CRD_DOCUMENTS = {
    "dev": set(),
    "gpu": GPU_CRD_DOCUMENTS,
    "profile": GPU_CRD_DOCUMENTS,
    "standalone": GPU_CRD_DOCUMENTS,
}
GPU_OVERLAYS = ("gpu", "profile", "standalone")
PLACEHOLDER = "CHANGE_ME"


@functools.cache
def rendered_text(overlay: str) -> str:
    """`kubectl kustomize` of manifests/overlays/<overlay>, or of any directory given as a path."""
    directory = Path(overlay) if "/" in overlay else ROOT / "manifests" / "overlays" / overlay
    result = subprocess.run(
        [kubectl_or_skip(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return result.stdout


def render(overlay: str) -> list[dict]:
    """The overlay's documents in kustomize's output order, the order `kubectl apply -k` sends them
    (a fresh copy each call, so tests may modify them)."""
    return [doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc]


def relative(path: Path, start: Path) -> str:
    """`path` relative to `start` (kustomize refuses absolute resource paths)."""
    return os.path.relpath(path, start)


def name_of(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def is_crd(doc: dict) -> bool:
    return (doc["apiVersion"], doc["kind"]) in CRD_KINDS


def pod_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod-like spec) for every workload in `doc`, CRD kinds included."""
    kind = doc["kind"]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        yield name_of(doc), doc["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield name_of(doc), doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "Pod" or kind == "ServingRuntime":
        yield name_of(doc), doc["spec"]
    elif kind == "TrainingRuntime":
        for job in doc["spec"]["template"]["spec"]["replicatedJobs"]:
            yield f"{name_of(doc)} {job['name']}", job["template"]["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec.get("containers", [])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(overlay: str) -> None:
    docs = render(overlay)
    assert docs, f"{overlay} renders nothing"
    checked_by_hand = set()
    for doc in docs:
        if is_crd(doc):
            checked_by_hand.add(name_of(doc))
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{overlay}: {name_of(doc)} at {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{overlay}: {error.message}; add the kind to CRD_KINDS with a hand check")
    print(f"{overlay}: schema validation skipped for CRD kinds {sorted(checked_by_hand)} (checked by hand)")
    assert checked_by_hand == EXPECTED_CRD_DOCUMENTS[overlay]


def test_strict_validation_rejects_unknown_fields() -> None:
    """The schema check is not vacuous: a misspelt field fails it."""
    statefulset = copy.deepcopy(find(render("dev"), "StatefulSet", "minio"))
    statefulset["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_overlays_namespace(overlay: str) -> None:
    cluster_scoped = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}
    for doc in render(overlay):
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == NAMESPACES[overlay], name_of(doc)
    assert not [doc for doc in render(overlay) if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_hold_placeholders_only(overlay: str) -> None:
    docs = render(overlay)
    secrets = [doc for doc in docs if doc["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        values = dict(secret.get("stringData", {}))
        values.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
        assert values, name_of(secret)
        for key, value in values.items():
            assert value.startswith(PLACEHOLDER), (
                f"{name_of(secret)}: {key} is not a {PLACEHOLDER} placeholder"
            )
    text = rendered_text(overlay)
    for pattern in (r"AKIA[0-9A-Z]{16}", r"minioadmin", r"BEGIN [A-Z ]*PRIVATE KEY", r"hf_[A-Za-z0-9]{30,}"):
        assert not re.search(pattern, text), f"{overlay}: credential-like text matching {pattern!r}"
    # Credentials reach containers only through secretKeyRef, never as literal values.
    for where, spec in (item for doc in docs for item in pod_specs(doc)):
        for container in containers(spec):
            for env in container.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_?KEY", env["name"]):
                    assert "valueFrom" in env, f"{where}: env {env['name']} is a literal"


def test_minio_refuses_placeholder_credentials() -> None:
    minio = find(render("dev"), "StatefulSet", "minio")["spec"]["template"]["spec"]["containers"][0]
    script = " ".join(minio["command"] + minio["args"])
    assert f"*{PLACEHOLDER}*" in script and "exit 1" in script
    assert script.index(PLACEHOLDER) < script.index("exec minio server")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kfp_launcher_sends_the_pipeline_root_to_minio(overlay: str) -> None:
    docs = render(overlay)
    launcher = find(docs, "ConfigMap", "kfp-launcher")["data"]
    if overlay in ("standalone", "profile"):
        # KFP's own root stays: other pipelines use it, and the UI renders reports only from its own store
        assert "defaultPipelineRoot" not in launcher
    else:
        assert launcher["defaultPipelineRoot"] == "s3://twt-artifacts/pipeline-root"
    s3 = yaml.safe_load(launcher["providers"])["s3"]["default"]
    # The endpoint is the MinIO Service of this namespace.
    host, port = s3["endpoint"].split(":")
    service = find(docs, "Service", host.split(".")[0])
    assert host == f"{service['metadata']['name']}.{NAMESPACES[overlay]}.svc.cluster.local"
    # The steps reach the same MinIO: by the pipeline's default, or by the value the README gives.
    endpoint = f"http://{s3['endpoint']}"
    if overlay == "standalone":
        assert f"s3_endpoint={endpoint}" in readme_cluster_section()
    else:
        assert inspect.signature(twt_distillation.pipeline_func).parameters["s3_endpoint"].default == endpoint
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert s3["disableSSL"] is True and s3["forcePathStyle"] is True
    # The credentials it names exist, with both keys.
    ref = s3["credentials"]["secretRef"]
    assert s3["credentials"]["fromEnv"] is False
    secret = find(docs, "Secret", ref["secretName"])
    assert {ref["accessKeyKey"], ref["secretKeyKey"]} <= set(secret["stringData"])
    # The bucket of the pipeline root is one the bucket Job creates.
    job_env = {
        e["name"]: e.get("value")
        for e in find(docs, "Job", "minio-create-buckets")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "twt-artifacts" in job_env["BUCKETS"].split()


def test_bucket_job_waits_for_minio_and_is_idempotent() -> None:
    job = find(render("dev"), "Job", "minio-create-buckets")
    container = job["spec"]["template"]["spec"]["containers"][0]
    script = "\n".join(container["args"])
    env = {e["name"]: e for e in container["env"]}
    assert set(env["BUCKETS"]["value"].split()) == {"twt-artifacts", "twt-registry", "twt-data"}
    assert "until mc ls" in script  # waits for MinIO
    assert "mc mb --ignore-existing" in script  # re-runs are harmless
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0
    assert container["image"].startswith("quay.io/minio/mc:RELEASE.")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_bounded_and_unprivileged(overlay: str) -> None:
    checked = 0
    for doc in render(overlay):
        for where, spec in pod_specs(doc):
            pod_security = spec.get("securityContext", {})
            for container in containers(spec):
                label = f"{overlay}: {where} container {container['name']}"
                resources = container.get("resources", {})
                for bound in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                        f"{label}: no cpu/memory {bound}"
                    )
                security = {**pod_security, **container.get("securityContext", {})}
                assert security.get("runAsNonRoot") is True, f"{label}: runAsNonRoot not set"
                assert security.get("runAsUser", 1) != 0, f"{label}: runs as uid 0"
                assert security.get("readOnlyRootFilesystem") is True, f"{label}: writable root file system"
                assert security.get("allowPrivilegeEscalation") is False, label
                assert security.get("capabilities", {}).get("drop") == ["ALL"], label
                image = container["image"]
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                assert tag and tag != "latest", f"{label}: image {image} is not pinned"
                checked += 1
    assert checked >= 2


def test_runner_role_is_least_privilege() -> None:
    docs = render("dev")
    role = find(docs, "Role", "twt-pipeline-runner")
    binding = find(docs, "RoleBinding", "twt-pipeline-runner")
    find(docs, "ServiceAccount", "twt-pipeline-runner")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "twt-pipeline-runner",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "twt-pipeline-runner", "namespace": NAMESPACE}
    ]
    secret_names = set()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
            assert rule.get("resourceNames"), f"{rule['resources']} not limited by name"
            assert set(rule["verbs"]) == {"get"}
        if "secrets" in rule["resources"]:
            secret_names.update(rule["resourceNames"])
        assert not {"pods/exec", "pods/attach", "serviceaccounts/token"} & set(rule["resources"])
        if "pods" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
    launcher = yaml.safe_load(find(docs, "ConfigMap", "kfp-launcher")["data"]["providers"])
    assert launcher["s3"]["default"]["credentials"]["secretRef"]["secretName"] in secret_names


def test_dev_overlay_is_small() -> None:
    minio = find(render("dev"), "StatefulSet", "minio")
    assert minio["spec"]["replicas"] == 1
    storage = minio["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert storage.endswith("Gi") and int(storage[:-2]) <= 20
    limits = minio["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"].endswith("Gi") and int(limits["memory"][:-2]) <= 2


@pytest.mark.parametrize("overlay", GPU_OVERLAYS)
def test_gpu_pods_match_the_node_pool_settings_and_tolerate_any_taint_value(overlay: str) -> None:
    """One node selector and `Exists` tolerations everywhere: the teacher server, the cache's init Job,
    and the ConfigMap whose keys are the pipeline's parameters of the same names."""
    docs = render(overlay)
    pool = find(docs, "ConfigMap", "twt-gpu-node-pool")["data"]
    selector = json.loads(pool["gpu_node_selector"])
    tolerations = json.loads(pool["gpu_tolerations"])
    assert tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pool["gpu_accelerator_type"] == "nvidia.com/gpu" and int(pool["gpu_accelerator_limit"]) >= 1
    parameters = inspect.signature(twt_distillation.pipeline_func).parameters
    for key in ("gpu_node_selector", "gpu_tolerations", "gpu_accelerator_type", "gpu_accelerator_limit"):
        assert key in parameters, f"twt-gpu-node-pool: {key} is not a pipeline parameter"
    # the ConfigMap documents the pipeline's own defaults: a cluster that passes nothing gets the same pool
    assert selector == parameters["gpu_node_selector"].default
    assert tolerations == parameters["gpu_tolerations"].default
    assert pool["gpu_accelerator_type"] == parameters["gpu_accelerator_type"].default
    priority = find(docs, "PriorityClass", pool["priority_class"])
    assert priority["preemptionPolicy"] == "Never" and not priority.get("globalDefault", False)
    predictor = find(docs, "InferenceService", "teacher-example")["spec"]["predictor"]
    init = find(docs, "Job", "twt-model-cache-init")["spec"]["template"]["spec"]
    for where, spec in (("teacher-example", predictor), ("twt-model-cache-init", init)):
        assert spec["nodeSelector"] == selector, where
        assert spec["tolerations"] == tolerations, where
    (runtime,) = [spec for doc in docs if doc["kind"] == "TrainingRuntime" for _, spec in pod_specs(doc)]
    for spec in (predictor, runtime):  # a TrainJob cannot set one: its runtime does
        assert spec["priorityClassName"] == priority["metadata"]["name"]
    assert not [doc for doc in render("dev") if is_crd(doc) or doc["kind"] == "PriorityClass"]


def check_serving_runtime(runtime: dict) -> None:
    spec = runtime["spec"]
    formats = spec["supportedModelFormats"]
    assert formats and all(f["name"] for f in formats)
    assert spec["containers"], "a ServingRuntime needs containers"
    for container in spec["containers"]:
        assert container["name"] and container["image"]
        assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", container["image"]), container["image"]
        assert "--port=8080" in container["args"]
        assert {"containerPort": 8080, "protocol": "TCP"} in container["ports"]
        assert container["resources"]["limits"]["nvidia.com/gpu"]
    mounted = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
    assert mounted <= {v["name"] for v in spec.get("volumes", [])}


def check_inference_service(service: dict, runtimes: dict[str, dict]) -> None:
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    runtime = runtimes[model["runtime"]]  # KeyError: names a runtime that is not rendered
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    args = dict(arg.removeprefix("--").split("=", 1) for arg in model["args"])
    assert args["model"], "--model is required"
    gpus = int(model["resources"]["limits"]["nvidia.com/gpu"])
    assert 1 <= int(args["tensor-parallel-size"]) <= gpus
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in predictor["tolerations"])
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


@pytest.mark.parametrize(
    "document",
    sorted(GPU_CRD_DOCUMENTS),
)
def test_crd_documents_by_hand(document: str) -> None:
    """The CRD kinds skipped by schema validation, checked for the fields KServe requires."""
    docs = render("gpu")
    kind, name = document.split("/")
    doc = find(docs, kind, name)
    assert (doc["apiVersion"], kind) in CRD_KINDS
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServingRuntime"}
    if kind == "ServingRuntime":
        check_serving_runtime(doc)
    elif kind == "TrainingRuntime":
        check_training_runtime(doc)
    else:
        check_inference_service(doc, runtimes)


def check_training_runtime(runtime: dict) -> None:
    """Against Kubeflow Trainer's vendored CRD schema; the name and container that twt.training.jobs uses."""
    from twt.core.kube_schemas import schema_errors
    from twt.training.jobs import CONTAINER, JobSpec

    assert schema_errors(runtime) == []
    assert runtime["metadata"]["name"] == JobSpec.runtime and JobSpec.runtime_kind == "TrainingRuntime"
    assert runtime["spec"]["mlPolicy"]["torch"] == {}
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    names = [c["name"] for c in job["template"]["spec"]["template"]["spec"]["containers"]]
    assert names == [CONTAINER]


def test_training_jobs_role_lets_the_runner_create_and_watch_jobs_only() -> None:
    docs = render("gpu")
    role = find(docs, "Role", "twt-training-jobs")
    binding = find(docs, "RoleBinding", "twt-training-jobs")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "twt-pipeline-runner", "namespace": NAMESPACE}
    ]
    granted = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    for group, plural in (("trainer.kubeflow.org", "trainjobs"), ("kubeflow.org", "pytorchjobs")):
        assert granted[(group, plural)] == {"create", "get", "list", "watch", "delete"}
    assert granted[("", "pods")] == {"get", "list", "watch"} and granted[("", "pods/log")] == {"get"}
    assert not any(r in {"secrets", "pods/exec", "*"} for _, r in granted)
    assert not [d for d in render("dev") if d["kind"] == "TrainingRuntime"]


# --- one install per KFP mode ------------------------------------------------------------------------------

PROFILE_STEP = str(ROOT / "manifests" / "profile")  # multi-user, step 1: the Profile alone
EXISTING_NAMESPACES = frozenset({"default", "kube-system", KFP_NAMESPACE})  # a cluster with Kubeflow
CLUSTER_SCOPED = {"Namespace", "Profile", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}


def refused_by_apply(steps: list[list[dict]]) -> list[str]:
    """The objects a fresh cluster refuses when each step is one `kubectl apply -k`, run in order.

    What kubectl does: it sends a step's objects one request each, in the order kustomize rendered
    them, without waiting for any controller; a namespaced object whose namespace does not exist yet is
    refused (`namespaces "X" not found`), kubectl goes on with the rest and exits 1 (k8s.io/kubectl
    pkg/cmd/apply/apply.go, `ApplyOptions.Run`: each object in turn, errors aggregated). A Namespace
    exists as soon as its own request succeeds. A Profile's namespace is made by Kubeflow's profile
    controller afterwards, so it exists only for later steps (after
    `until kubectl get namespace X; do sleep 2; done`).
    """
    namespaces = set(EXISTING_NAMESPACES)
    refused = []
    for step in steps:
        made_by_controllers = set()
        for doc in step:
            namespace = doc["metadata"].get("namespace")
            if doc["kind"] not in CLUSTER_SCOPED and namespace not in namespaces:
                refused.append(f"{name_of(doc)} (namespace {namespace})")
            elif doc["kind"] == "Namespace":
                namespaces.add(doc["metadata"]["name"])
            elif doc["kind"] == "Profile":
                made_by_controllers.add(doc["metadata"]["name"])
        namespaces |= made_by_controllers
    return refused


def test_the_apply_model_refuses_a_namespace_a_controller_has_not_made_yet() -> None:
    """The model is not vacuous: the Profile and its objects in one apply fail, in either order."""
    profile, resources = render(PROFILE_STEP), render("profile")
    assert refused_by_apply([profile + resources])
    assert refused_by_apply([resources + profile])
    assert refused_by_apply([resources])


@pytest.mark.parametrize(
    "steps",
    [(PROFILE_STEP, "profile"), ("dev",), ("gpu",), ("standalone",)],
    ids=["multi-user", "dev", "gpu", "standalone"],
)
def test_each_install_applies_from_scratch_in_its_documented_order(steps: tuple[str, ...]) -> None:
    assert refused_by_apply([render(step) for step in steps]) == []


def test_multi_user_install_is_a_profile_then_the_gpu_overlays_parts_in_its_namespace() -> None:
    (profile,) = render(PROFILE_STEP)
    assert (profile["apiVersion"], profile["kind"]) == ("kubeflow.org/v1", "Profile")
    assert profile["metadata"]["name"] == NAMESPACE and "namespace" not in profile["metadata"]
    assert profile["spec"]["owner"]["kind"] == "User"
    docs = render("profile")
    assert not [doc for doc in docs if doc["kind"] in {"Namespace", "Profile"}]
    # The same objects as overlays/gpu (GPU pool, KServe, Trainer), less the Namespace.
    gpu = {name_of(doc) for doc in render("gpu") if doc["kind"] != "Namespace"}
    assert {name_of(doc) for doc in docs} == gpu


def test_standalone_puts_what_a_run_needs_in_the_kfp_namespace() -> None:
    """Standalone KFP 2.17 runs every workflow in its own namespace (`ReplaceNamespace` in
    backend/src/apiserver/resource/resource_manager.go returns "" outside multi-user mode; CreateRun then
    takes the API server's POD_NAMESPACE, default `kubeflow`)."""
    docs = render("standalone")
    assert not [doc for doc in docs if doc["kind"] == "Namespace"]  # KFP's namespace exists
    for kind, name in (
        ("ServiceAccount", "twt-pipeline-runner"),
        ("Secret", "twt-minio-credentials"),
        ("PersistentVolumeClaim", MODEL_CACHE_PVC),
        ("ConfigMap", "kfp-launcher"),
        ("StatefulSet", "minio"),
    ):
        assert find(docs, kind, name)["metadata"]["namespace"] == KFP_NAMESPACE
    assert "minio.twt." not in rendered_text("standalone")


# --- storage -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_cache_binds_on_a_default_class_and_is_made_writable_without_root(overlay: str) -> None:
    docs = render(overlay)
    claim = find(docs, "PersistentVolumeClaim", MODEL_CACHE_PVC)["spec"]
    # ReadWriteOnce on the default class: what the usual default (block) classes provision.
    assert claim["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in claim
    job = find(docs, "Job", "twt-model-cache-init")["spec"]["template"]["spec"]
    (volume,) = job["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == MODEL_CACHE_PVC
    # The kubelet gives the volume the steps' group (fsGroup): no root, no hand chown.
    security = job["securityContext"]
    assert security["fsGroup"] == security["runAsUser"] == security["runAsGroup"] == RUN_AS
    (container,) = job["containers"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/cache"]
    script = container["args"][0]
    assert "touch /cache/" in script and "exit 1" in script


def test_the_documented_user_overlay_sets_credentials_and_the_cache_storage_class(tmp_path: Path) -> None:
    """The overlay manifests/README.md tells a user to write, rendered as written."""
    text = (ROOT / "manifests" / "README.md").read_text()
    block = re.search(r"```yaml\n(# ~/twt-cluster/kustomization\.yaml\n.*?)```", text, re.S)
    assert block, "manifests/README.md: no ~/twt-cluster/kustomization.yaml block"
    overlay = tmp_path / "twt-cluster"
    overlay.mkdir()
    written = block.group(1).replace("../twt/manifests/", f"{relative(ROOT / 'manifests', overlay)}/")
    (overlay / "kustomization.yaml").write_text(written)
    (overlay / "minio.env").write_text("accesskey=twt-admin\nsecretkey=not-a-real-secret-1\n")
    docs = render(str(overlay))
    secret = find(docs, "Secret", "twt-minio-credentials")
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert values == {"accesskey": "twt-admin", "secretkey": "not-a-real-secret-1"}
    assert secret["metadata"]["namespace"] == NAMESPACE
    claim = find(docs, "PersistentVolumeClaim", MODEL_CACHE_PVC)["spec"]
    class_name = re.search(r"value: (\S+)\s*# the storage class", written)
    assert class_name and claim["storageClassName"] == class_name.group(1)
    assert claim["accessModes"] == ["ReadWriteMany"]


# --- Istio -------------------------------------------------------------------------------------------------


def pod_annotations(doc: dict) -> dict:
    kind = doc["kind"]
    if kind in {"StatefulSet", "Job"}:
        return doc["spec"]["template"]["metadata"].get("annotations", {})
    if kind == "InferenceService":
        return doc["spec"]["predictor"].get("annotations", {})
    if kind == "TrainingRuntime":
        (job,) = doc["spec"]["template"]["spec"]["replicatedJobs"]
        return job["template"]["spec"]["template"].get("metadata", {}).get("annotations", {})
    raise AssertionError(f"no pod template in {name_of(doc)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_istio_sidecar_on_minio_jobs_and_the_servers_kfp_pods_call(overlay: str) -> None:
    """KFP 2.17's step pods never get a sidecar (backend/src/apiserver/template/v2_template.go), so
    what they call runs without one, and a Job's sidecar would keep it from completing."""
    workloads = [
        doc
        for doc in render(overlay)
        if doc["kind"] in {"StatefulSet", "Job", "InferenceService", "TrainingRuntime"}
    ]
    assert {"StatefulSet/minio", "Job/minio-create-buckets", "Job/twt-model-cache-init"} <= {
        name_of(doc) for doc in workloads
    }
    for doc in workloads:
        assert pod_annotations(doc).get("sidecar.istio.io/inject") == "false", f"{overlay}: {name_of(doc)}"


def test_meshed_minio_component_admits_kfps_sidecar_less_pods(tmp_path: Path) -> None:
    overlay = tmp_path / "meshed"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": NAMESPACE,  # as manifests/README.md says: a component's objects need it
                "resources": [relative(ROOT / "manifests" / "overlays" / "profile", overlay)],
                "components": [relative(ROOT / "manifests" / "components" / "istio-meshed-minio", overlay)],
            }
        )
    )
    docs = render(str(overlay))
    minio = find(docs, "StatefulSet", "minio")
    assert pod_annotations(minio)["sidecar.istio.io/inject"] == "true"
    assert pod_annotations(find(docs, "Job", "minio-create-buckets"))["sidecar.istio.io/inject"] == "false"
    pod_labels = minio["spec"]["template"]["metadata"]["labels"]
    peer = find(docs, "PeerAuthentication", "minio")
    policy = find(docs, "AuthorizationPolicy", "minio-s3")
    for doc in (peer, policy):
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), name_of(doc)
    assert peer["spec"]["mtls"]["mode"] == "PERMISSIVE"  # plaintext from pods without a sidecar
    assert policy["spec"]["action"] == "ALLOW"
    (rule,) = policy["spec"]["rules"]
    assert "from" not in rule  # sidecar-less callers have no principal to match
    service_port = find(docs, "Service", "minio")["spec"]["ports"][0]
    container_port = next(
        p["containerPort"]
        for p in minio["spec"]["template"]["spec"]["containers"][0]["ports"]
        if p["name"] == "s3"
    )
    assert service_port["name"] == "s3" and rule["to"][0]["operation"]["ports"] == [str(container_port)]


# --- serving the student -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", GPU_OVERLAYS)
def test_the_runner_may_create_the_students_inference_service_and_nothing_more(overlay: str) -> None:
    docs = render(overlay)
    role = find(docs, "Role", "twt-student-serving")
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["serving.kserve.io"] and rule["resources"] == ["inferenceservices"]
    assert not {"delete", "deletecollection", "*"} & set(rule["verbs"])
    binding = find(docs, "RoleBinding", "twt-student-serving")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "twt-pipeline-runner", "namespace": NAMESPACES[overlay]}
    ]
    account = find(docs, "ServiceAccount", "twt-kserve")
    assert account["secrets"] == [{"name": "twt-kserve-s3"}]


# --- the README's cluster section, as a new user runs it ---------------------------------------------------

CLUSTER_SECTION = "### The whole path on Kubeflow, in order"


def readme_cluster_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(CLUSTER_SECTION)
    return text[start : text.index("\n## ", start)]


def test_readme_names_only_manifest_directories_that_render() -> None:
    section = readme_cluster_section() + (ROOT / "manifests" / "README.md").read_text()
    named = set(re.findall(r"(?:kubectl (?:apply -k|kustomize)) (manifests/[\w/-]+)", section))
    assert {"manifests/profile"} <= named, sorted(named)
    for directory in named:
        assert render(str(ROOT / directory)), directory
    # Every Secret the README creates is one a manifest or the pipeline refers to.
    created = set(re.findall(r"create secret (?:generic|docker-registry) ([\w-]+)", section))
    assert created == {"twt-hf-token", "twt-image-pull", "twt-teacher-api-keys", "twt-kserve-s3"}
    parameters = inspect.signature(twt_distillation.pipeline_func).parameters
    referred = {p.default for p in parameters.values() if isinstance(p.default, str)}
    referred |= {
        s["name"] for d in render("profile") if d["kind"] == "ServiceAccount" for s in d.get("secrets", [])
    }
    assert created <= referred


def test_readme_data_upload_lands_where_the_example_configuration_reads(
    s3_endpoint: str, tmp_path: Path
) -> None:
    """The README's upload command, run as written against a real S3 server, puts the question files at
    the URIs configs/example-cluster.yaml names, in a bucket the manifests create."""
    from minio import Minio

    from tests.s3_server import KEY

    section = readme_cluster_section()
    command = re.search(
        r"\n   (python -c 'import os, sys; from minio import Minio\n.*?)\n   ```", section, re.S
    )
    assert command, "README: no upload command"
    lines = command.group(1).replace("localhost:9000", s3_endpoint).split("\n")
    script = "\n".join(line.removeprefix("   ") for line in lines)
    config = yaml.safe_load((ROOT / "configs" / "example-cluster.yaml").read_text())
    bucket = "twt-data"
    job = find(render("dev"), "Job", "minio-create-buckets")["spec"]["template"]["spec"]["containers"][0]
    assert bucket in next(e["value"] for e in job["env"] if e["name"] == "BUCKETS").split()
    client = Minio(s3_endpoint, KEY, KEY, secure=False)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    for name in ("train.jsonl", "test.jsonl", "configs/example-cluster.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"{name}\n")
    env = {**os.environ, "TWT_S3_ACCESS_KEY": KEY, "TWT_S3_SECRET_KEY": KEY}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for uri in (config["task"]["questions"], config["task"]["eval"]):
        found_bucket, _, key = uri.removeprefix("s3://").partition("/")
        assert found_bucket == bucket
        local = Path(key).name
        assert client.get_object(bucket, key).read().decode() == f"{local}\n", uri
