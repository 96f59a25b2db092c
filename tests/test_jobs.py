"""Kubeflow training jobs: a 2-node × 4-GPU stage renders as a TrainJob and a PyTorchJob that match the
vendored CRD schemas; submit-and-wait runs the real `kubernetes` client against KubeApiDouble."""

from __future__ import annotations

import copy
import json

import pytest
from kube_api_double import KubeApiDouble
from kubernetes import client

from twt.core.kube_schemas import crd_record, schema_errors
from twt.core.schema import TrainingConfig
from twt.training.jobs import (
    JobSpec,
    TrainJobError,
    job_name,
    job_state,
    kube_clients,
    render_pytorchjob,
    render_trainjob,
    submit_and_wait,
    validate,
)

IMAGE = "ghcr.io/twt-project/twt-gpu:0.1.0"


def _spec(**overrides) -> JobSpec:
    values = {
        "name": job_name("demo", 1, "run-1"),
        "namespace": "twt",
        "image": IMAGE,
        "args": ["train-worker", "--spec", '{"stage": 1}'],
        "nodes": 2,
        "processes_per_node": 4,
        "gpus_per_node": 4,
        "env": {"TWT_S3_ENDPOINT": "http://minio.twt.svc.cluster.local:9000"},
    }
    return JobSpec(**{**values, **overrides})


def test_the_vendored_schemas_name_their_source() -> None:
    assert "kubeflow/trainer@" in crd_record("TrainJob")["source"]
    assert "training-operator@v1.9.0" in crd_record("PyTorchJob")["source"]
    assert set(crd_record("TrainJob")["versions"]) == {"v1alpha1"}


def test_a_two_node_four_gpu_stage_renders_valid_jobs() -> None:
    trainjob, pytorchjob = render_trainjob(_spec()), render_pytorchjob(_spec())
    assert schema_errors(trainjob) == [] and schema_errors(pytorchjob) == []
    validate(trainjob)
    validate(pytorchjob)
    trainer = trainjob["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    assert trainer["image"] == IMAGE and trainer["command"][:3] == ["python", "-m", "torch.distributed.run"]
    assert trainjob["spec"]["runtimeRef"] == {
        "name": "twt-torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
    }
    replicas = pytorchjob["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 1)
    assert pytorchjob["spec"]["nprocPerNode"] == "4"
    container = replicas["Worker"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch" and container["image"] == IMAGE
    assert container["args"] == trainer["args"]  # the same entry point in both
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert len(job_name("a-very-long-run-name-" * 5, 3, "x")) <= 63


def test_schema_validation_is_not_vacuous() -> None:
    trainjob = render_trainjob(_spec())
    broken = copy.deepcopy(trainjob)
    broken["spec"]["trainer"]["numNode"] = 2  # misspelt
    assert any("numNode" in e for e in schema_errors(broken))
    broken = copy.deepcopy(trainjob)
    broken["spec"]["trainer"]["numNodes"] = "2"
    assert schema_errors(broken) == ["spec.trainer.numNodes: '2' is not of type 'integer'"]
    broken = copy.deepcopy(trainjob)
    del broken["spec"]["runtimeRef"]
    with pytest.raises(
        TrainJobError, match="does not match its CRD schema: spec: 'runtimeRef' is a required"
    ):
        validate(broken)
    job = render_pytorchjob(_spec())
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    assert schema_errors(job) == ["spec.pytorchReplicaSpecs.Master.replicas: 'one' is not of type 'integer'"]


def _clients(api: KubeApiDouble):
    return kube_clients(client.ApiClient(client.Configuration(host=api.url)))


@pytest.mark.parametrize("render", [render_trainjob, render_pytorchjob])
def test_submit_and_wait_streams_status_and_logs_until_the_job_succeeds(render) -> None:
    lines: list[str] = []
    obj = render(_spec())
    with KubeApiDouble("succeed") as api:
        final = submit_and_wait(obj, _clients(api), poll_s=0.01, log=lines.append)
    assert job_state(final)[0] == "succeeded"
    name = f"{obj['kind']} twt/{obj['metadata']['name']}"
    assert lines[0] == f"{name}: submitted"
    assert f"{name}: pending" in lines and any(line.startswith(f"{name}: running") for line in lines)
    assert lines[-1].startswith(f"{name}: succeeded")
    pod_lines = [line for line in lines if line.startswith("[")]
    assert [line.split("] ")[1] for line in pod_lines] == [
        f"update {i}/4 loss {5 - i * 0.5:.2f}" for i in range(1, 5)
    ]


def test_a_failed_job_fails_the_step_with_the_jobs_own_error() -> None:
    lines: list[str] = []
    obj = render_trainjob(_spec())
    with KubeApiDouble("fail") as api, pytest.raises(TrainJobError) as failed:
        submit_and_wait(obj, _clients(api), poll_s=0.01, log=lines.append)
    reason = "jobset failed due to one or more job failures"  # the operator's own message
    assert str(failed.value) == f"TrainJob {obj['metadata']['name']} in namespace twt failed: {reason}"
    assert any(line.endswith("twt: error: CUDA out of memory") for line in lines)  # the pod's last words


def test_a_rejected_job_is_one_line_naming_job_namespace_and_reason() -> None:
    obj = render_trainjob(_spec())
    with KubeApiDouble("deny") as api, pytest.raises(TrainJobError) as denied:
        submit_and_wait(obj, _clients(api), poll_s=0.01, log=lambda _: None)
    message = str(denied.value)
    assert message.startswith(
        f"TrainJob {obj['metadata']['name']} in namespace twt was rejected: admission webhook"
    )
    assert "TrainingRuntime twt/twt-torch-distributed" in message and "\n" not in message

    invalid = copy.deepcopy(obj)
    invalid["spec"]["trainer"]["numProcPerNode"] = "four"
    with KubeApiDouble("succeed") as api, pytest.raises(TrainJobError, match=r"was rejected: .* is invalid"):
        submit_and_wait(invalid, _clients(api), poll_s=0.01, log=lambda _: None)


def test_a_job_that_never_starts_is_deleted_and_names_the_reason() -> None:
    obj = render_pytorchjob(_spec())
    with KubeApiDouble("unschedulable") as api:
        with pytest.raises(TrainJobError) as stuck:
            submit_and_wait(obj, _clients(api), start_timeout_s=0.2, poll_s=0.02, log=lambda _: None)
        assert not api.jobs  # deleted: it must not grab GPUs later
    assert str(stuck.value).startswith(
        f"PyTorchJob {obj['metadata']['name']} in namespace twt did not start within 0.2 s"
    )
    assert "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in str(stuck.value)


def test_a_retried_step_adopts_a_running_job_and_replaces_a_failed_one() -> None:
    obj = render_trainjob(_spec())
    with KubeApiDouble("succeed") as api:
        clients = _clients(api)
        clients.custom.create_namespaced_custom_object(
            "trainer.kubeflow.org", "v1alpha1", "twt", "trainjobs", obj
        )
        lines: list[str] = []
        submit_and_wait(obj, clients, poll_s=0.01, log=lines.append)
        assert "left pending by an earlier attempt" in lines[0]
        assert [m for m, _ in api.requests].count("POST") == 2  # ours was refused (409), the old one adopted
        # now the old one has failed: it is replaced
        key = ("trainjobs", "twt", obj["metadata"]["name"])
        api.jobs[key]["status"] = {
            "conditions": [{"type": "Failed", "status": "True", "message": "preempted"}]
        }
        api.ticks[key] = -100  # stays failed on the next read
        lines.clear()
        submit_and_wait(obj, clients, poll_s=0.01, log=lines.append)
        assert "an earlier attempt failed; replacing it" in lines[0] and lines[1].endswith("submitted")


# --- the pods of a job get the step's scheduling and secrets ---------------------------------------------

STEP_POD = {
    "metadata": {"name": "step", "namespace": "twt"},
    "spec": {
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "imagePullSecrets": [{"name": "run-pull"}],
        "containers": [
            {"name": "wait"},
            {
                "name": "main",
                "env": [
                    {"name": "KFP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {
                        "name": "TWT_S3_ACCESS_KEY",
                        "valueFrom": {"secretKeyRef": {"name": "run-minio", "key": "accesskey"}},
                    },
                    {
                        "name": "TWT_S3_SECRET_KEY",
                        "valueFrom": {"secretKeyRef": {"name": "run-minio", "key": "secretkey"}},
                    },
                    {
                        "name": "HF_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "run-hf", "key": "token", "optional": True}},
                    },
                ],
            },
        ],
    },
}


def _pods_of(obj: dict) -> list[tuple[dict, dict]]:
    """(pod spec, trainer container) of each kind of pod a job makes, as the job states them."""
    if obj["kind"] == "PyTorchJob":
        templates = [r["template"]["spec"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
        return [(t, t["containers"][0]) for t in templates]
    (patch,) = obj["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return [(pod, {**container, "env": obj["spec"]["trainer"]["env"]})]


@pytest.mark.parametrize("render", [render_trainjob, render_pytorchjob])
def test_the_trainjob_carries_the_pod_overrides(render) -> None:
    from twt.training.jobs import JOB_HF_HOME, overrides_of_pod

    obj = render(_spec(pod=overrides_of_pod(STEP_POD)))
    validate(obj)
    for pod, container in _pods_of(obj):
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["imagePullSecrets"] == [{"name": "run-pull"}]
        env = {e["name"]: e for e in container["env"]}
        assert env["TWT_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "run-minio",
            "key": "accesskey",
        }
        assert env["TWT_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "run-minio"
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "run-hf",
            "key": "token",
            "optional": True,
        }
        assert env["TWT_S3_ENDPOINT"]["value"].startswith("http://minio") and "KFP_POD_NAME" not in env
        assert env["HF_HOME"] == {"name": "HF_HOME", "value": JOB_HF_HOME}
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == JOB_HF_HOME]
        assert {"name": mount["name"], "emptyDir": {}} in pod["volumes"]  # writable, under a read-only root
    with KubeApiDouble("succeed") as api:  # every field is one the CRD knows: nothing pruned
        submit_and_wait(obj, _clients(api), poll_s=0.01, log=lambda _: None)
        assert api.warnings == []


def test_a_priority_class_goes_to_pytorchjob_pods_and_is_refused_for_a_trainjob() -> None:
    from twt.training.jobs import PodOverrides

    spec = _spec(pod=PodOverrides(priority_class="twt-gpu"))
    replicas = render_pytorchjob(spec)["spec"]["pytorchReplicaSpecs"]
    assert {r["template"]["spec"]["priorityClassName"] for r in replicas.values()} == {"twt-gpu"}
    with pytest.raises(
        TrainJobError, match=r"cannot set priority class 'twt-gpu' .* set it in TrainingRuntime"
    ):
        render_trainjob(spec)


def test_the_jobs_scheduling_follows_the_training_settings_over_the_step_pod(monkeypatch, tmp_path) -> None:
    from twt.training.launch import job_pod

    namespace = tmp_path / "namespace"
    namespace.write_text("twt")
    monkeypatch.setattr("twt.training.jobs.SA_NAMESPACE", str(namespace))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("HOSTNAME", "step")
    gpu_pool = {"pool": "gpu"}
    training = TrainingConfig(node_selector=gpu_pool, tolerations=[], priority_class="twt-gpu")
    with KubeApiDouble("succeed") as api:
        api.pods[("twt", "step")] = STEP_POD
        pod = job_pod(training, _clients(api))
        assert (pod.node_selector, pod.tolerations, pod.priority_class) == (gpu_pool, [], "twt-gpu")
        assert pod.image_pull_secrets == ["run-pull"] and len(pod.secret_env) == 3
        monkeypatch.setenv("HOSTNAME", "gone")
        with pytest.raises(
            TrainJobError, match=r"cannot read this step's pod twt/gone .*: pods \"gone\" not found"
        ):
            job_pod(TrainingConfig(), _clients(api))


# --- the API double follows the real server ---------------------------------------------------------------


def _create(api: KubeApiDouble, obj: dict, plural: str = "trainjobs", **kwargs) -> dict:
    group, _, version = obj["apiVersion"].rpartition("/")
    if plural != "trainjobs":
        group, version = "kubeflow.org", "v1"
    return _clients(api).custom.create_namespaced_custom_object(group, version, "twt", plural, obj, **kwargs)


def _refusal(api: KubeApiDouble, obj: dict, plural: str = "trainjobs", **kwargs) -> tuple[int, str]:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as refused:
        _create(api, obj, plural, **kwargs)
    return refused.value.status, json.loads(refused.value.body)["message"]


def test_the_double_checks_group_version_and_namespace_like_the_api_server() -> None:
    obj = render_trainjob(_spec())
    with KubeApiDouble("succeed") as api:
        assert _refusal(api, copy.deepcopy(obj), "pytorchjobs") == (
            400,
            "the API version in the data (trainer.kubeflow.org/v1alpha1) does not match the expected API "
            "version (kubeflow.org/v1)",
        )
        elsewhere = copy.deepcopy(obj)
        elsewhere["metadata"]["namespace"] = "other"
        assert _refusal(api, elsewhere) == (
            400,
            "the namespace of the provided object does not match the namespace sent on the request",
        )
        unset = copy.deepcopy(obj)
        del unset["metadata"]["namespace"]
        assert _create(api, unset)["metadata"]["namespace"] == "twt"


def test_the_double_prunes_unknown_fields_with_a_warning_unless_strict() -> None:
    obj = render_trainjob(_spec())
    obj["spec"]["trainer"]["numNode"] = 2  # misspelt
    with KubeApiDouble("succeed") as api:
        assert _refusal(api, copy.deepcopy(obj), field_validation="Strict") == (
            400,
            "TrainJob in version 'v1alpha1' cannot be handled as a TrainJob: strict decoding error: "
            'unknown field "spec.trainer.numNode"',
        )
        created = _create(api, obj)
        assert "numNode" not in created["spec"]["trainer"]
        assert api.warnings == ['unknown field "spec.trainer.numNode"']


def test_the_double_validates_with_the_crd_schema_and_names() -> None:
    obj = render_trainjob(_spec())
    with KubeApiDouble("succeed") as api:
        wrong_type = copy.deepcopy(obj)
        wrong_type["spec"]["trainer"]["numNodes"] = "2"
        status, message = _refusal(api, wrong_type)
        assert status == 422 and message.endswith("spec.trainer.numNodes: '2' is not of type 'integer'")
        twice = copy.deepcopy(obj)
        twice["spec"]["trainer"]["env"] *= 2
        status, message = _refusal(api, twice)
        assert status == 422 and "spec.trainer.env[2]: Duplicate value" in message
        for bad in ("Twt_Job", "x" * 254):
            named = copy.deepcopy(obj)
            named["metadata"]["name"] = bad
            status, message = _refusal(api, named)
            assert status == 422 and "metadata.name: Invalid value" in message
        del obj["spec"]["runtimeRef"]
        status, message = _refusal(api, obj)
        assert status == 422 and message.endswith("'runtimeRef' is a required property")


def test_a_job_name_leaves_room_for_the_names_of_its_pods() -> None:
    long_run = "a-very-long-run-name-" * 5
    assert len(job_name(long_run, 3, "x")) <= 47 and job_name(long_run, 3, "x").startswith("twt-a-very-long")
    with KubeApiDouble("succeed") as api:
        final = submit_and_wait(
            render_trainjob(_spec(name=job_name(long_run, 3, "x"))),
            _clients(api),
            poll_s=0.01,
            log=lambda _: None,
        )
        assert job_state(final)[0] == "succeeded"
        too_long = render_trainjob(_spec(name="twt-" + "x" * 50))  # a valid name, but its pods' are not
        with pytest.raises(
            TrainJobError, match="pod names generated for this JobSet will exceed 63 characters"
        ):
            submit_and_wait(too_long, _clients(api), poll_s=0.01, log=lambda _: None)


def _failed_with_finalizer(api: KubeApiDouble, obj: dict) -> None:
    held = copy.deepcopy(obj)
    held["metadata"]["finalizers"] = ["trainer.kubeflow.org/cleanup"]
    _create(api, held)
    key = ("trainjobs", "twt", obj["metadata"]["name"])
    api.jobs[key]["status"] = {"conditions": [{"type": "Failed", "status": "True", "message": "preempted"}]}
    api.ticks[key] = -100


def test_a_failed_job_held_by_a_finalizer_is_replaced_once_it_is_gone() -> None:
    obj = render_trainjob(_spec())
    with KubeApiDouble("succeed", finalizer_ticks=3) as api:
        _failed_with_finalizer(api, obj)
        lines: list[str] = []
        submit_and_wait(obj, _clients(api), poll_s=0.01, log=lines.append, delete_timeout_s=5)
        assert "an earlier attempt failed; replacing it" in lines[0] and lines[1].endswith("submitted")
        gets = [m for m, p in api.requests if m == "GET" and p.endswith(obj["metadata"]["name"])]
        assert len(gets) >= 4  # the adopted one, then three polls while the finalizer held it
    with KubeApiDouble("succeed", finalizer_ticks=None) as api:
        _failed_with_finalizer(api, obj)
        with pytest.raises(TrainJobError) as held:
            submit_and_wait(obj, _clients(api), poll_s=0.01, log=lambda _: None, delete_timeout_s=0.3)
        assert str(held.value) == (
            f"TrainJob {obj['metadata']['name']} in namespace twt was deleted but is still there after 0.3 s "
            "(finalizers ['trainer.kubeflow.org/cleanup']); delete it by hand and retry the step"
        )
        assert api.jobs[("trainjobs", "twt", obj["metadata"]["name"])]["metadata"]["deletionTimestamp"]
