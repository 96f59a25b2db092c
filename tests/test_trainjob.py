"""Kubeflow training jobs: a 2-node × 4-GPU stage renders as a TrainJob and a PyTorchJob that match the
vendored CRD schemas; submit-and-wait runs the real `kubernetes` client against KubeApiDouble."""

from __future__ import annotations

import copy

import pytest
from kube_api_double import KubeApiDouble
from kubernetes import client

from twt.kube_schemas import crd_record, schema_errors
from twt.trainjob import (
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
