"""The pipeline on a real cluster layout: images from any registry, the namespace the manifests use, a
pull secret, accelerators per step, a memory-backed /dev/shm and the model cache volume.

    python -m pytest tests/test_cluster.py -q
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from missing_tools import kubectl_or_skip

from components.images import CPU_IMAGE, GPU_IMAGE, VERSION
from pipelines import release
from pipelines.__main__ import build_parser
from pipelines.__main__ import main as pipelines_main
from pipelines.distillation import twt_distillation
from pipelines.images import ImageError, check_image, check_registry, choose_images, executor_images_of
from pipelines.layout import HF_HOME, IMAGE_PULL_SECRET, MODEL_CACHE_PVC, SHM_SIZE, accelerator_arguments
from twt.core.load import parse_config

ROOT = Path(__file__).resolve().parents[1]
GPU_EXECUTORS = {
    "exec-sample-teacher",
    "exec-distill-stage",
    "exec-distill-stage-2",
    "exec-distill-stage-3",
    "exec-compress-reasoning",
    "exec-evaluate-students",
}


def compile_cli(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", "compile", "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("layout") / "twt.yaml"
    return release.load_spec(release.compile_pipeline(out))


def platform(spec: dict, executor: str) -> dict:
    return spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor]


# --- images from any registry ------------------------------------------------------------------------------


def test_image_registry_names_every_executor_and_compiles_byte_identical(tmp_path: Path) -> None:
    first = compile_cli(tmp_path / "a.yaml", "--image-registry", "localhost/x")
    assert first.returncode == 0, first.stderr
    env = {**__import__("os").environ, "TWT_IMAGE_REGISTRY": "localhost/x"}
    second = compile_cli(tmp_path / "b.yaml", env=env)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()
    images = release.check_images(tmp_path / "a.yaml")
    assert {name: image for name, image in images.items() if name in GPU_EXECUTORS} == {
        name: f"localhost/x/twt-gpu:{VERSION}" for name in GPU_EXECUTORS
    }
    assert {image for name, image in images.items() if name not in GPU_EXECUTORS} == {
        f"localhost/x/twt-cpu:{VERSION}"
    }
    assert "ghcr.io" not in (tmp_path / "a.yaml").read_text()
    # the training steps' TWT_IMAGE (the image of the jobs they submit) is their own image, retargeted too
    spec = next(yaml.safe_load_all((tmp_path / "a.yaml").read_text()))  # the platform spec follows it
    executors = spec["deploymentSpec"]["executors"]
    job_images = {
        name: env["value"]
        for name, executor in executors.items()
        for env in executor["container"].get("env", [])
        if env["name"] == "TWT_IMAGE"
    }
    assert len(job_images) == 3 and all(images[name] == value for name, value in job_images.items())
    # the in-memory pipeline is back on its defaults after the compile
    assert set(executor_images_of(twt_distillation).values()) == {CPU_IMAGE, GPU_IMAGE}


def test_an_unknown_or_invalid_registry_is_refused_in_one_line(tmp_path: Path) -> None:
    for registry, says in (("myuser", "not a registry host"), ("ghcr.io/Me", "host[:port][/path]")):
        result = compile_cli(tmp_path / "x.yaml", "--image-registry", registry)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and says in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "x.yaml").exists()


def test_registry_and_image_references() -> None:
    assert check_registry("localhost:5000/ml/") == "localhost:5000/ml"
    assert check_registry("registry.example.com") == "registry.example.com"
    for bad in ("", "a b", "ghcr.io//x", "user"):
        with pytest.raises(ImageError):
            check_registry(bad)
    assert choose_images(environ={}) == {"cpu": CPU_IMAGE, "gpu": GPU_IMAGE}
    assert choose_images(environ={"TWT_IMAGE_REGISTRY": "r.io/a"})["gpu"] == f"r.io/a/twt-gpu:{VERSION}"
    explicit = choose_images("r.io/a", gpu_image="r.io/b/twt-gpu:cu12", environ={})
    assert explicit == {"cpu": f"r.io/a/twt-cpu:{VERSION}", "gpu": "r.io/b/twt-gpu:cu12"}
    assert check_image("r.io/twt-cpu@sha256:" + "a" * 64)
    with pytest.raises(ImageError, match="--cpu-image"):
        choose_images(cpu_image="r.io/twt-cpu", environ={})  # no tag


def test_check_reads_the_images_the_spec_names(tmp_path: Path) -> None:
    out = release.compile_pipeline(
        tmp_path / "x.yaml", images=choose_images("reg.example.com:5000/t", environ={})
    )
    assert pipelines_main(["check", str(out)]) == 0
    text = out.read_text()
    # a CPU step on the GPU image, or a stale tag, is refused
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text(text.replace(f"t/twt-cpu:{VERSION}", f"t/twt-gpu:{VERSION}", 1))
    with pytest.raises(release.ReleaseError, match="twt-gpu"):
        release.check_images(swapped)
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(text.replace(f"t/twt-cpu:{VERSION}", "t/twt-cpu@sha256:" + "b" * 64))
    assert release.check_images(pinned)


# --- namespace ---------------------------------------------------------------------------------------------


def test_one_default_namespace_for_manifests_and_the_cli() -> None:
    base = yaml.safe_load((ROOT / "manifests" / "base" / "kustomization.yaml").read_text())
    assert base["namespace"] == release.NAMESPACE == "twt"
    for argv in (["upload", "--host", "http://kfp"], ["run", "--host", "http://kfp", "--config", "c.yaml"]):
        args = build_parser().parse_args(argv)
        assert args.namespace == release.NAMESPACE


def test_the_profile_overlay_renders_in_the_profile_namespace() -> None:
    kubectl = kubectl_or_skip()  # fails in CI without kubectl

    def render(directory: str) -> list[dict]:
        rendered = subprocess.run(
            [kubectl, "kustomize", str(ROOT / "manifests" / directory)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        return [doc for doc in yaml.safe_load_all(rendered) if doc]

    (profile,) = render("profile")  # step 1: the Profile alone (its controller creates the namespace)
    assert profile["kind"] == "Profile"
    assert profile["metadata"]["name"] == release.NAMESPACE and "namespace" not in profile["metadata"]
    docs = render("overlays/profile")  # step 2: the rest, in that namespace
    kinds = {doc["kind"] for doc in docs}
    assert not {"Namespace", "Profile"} & kinds
    namespaced = [doc for doc in docs if doc["kind"] not in ("ClusterRole", "PriorityClass")]
    assert {doc["metadata"].get("namespace") for doc in namespaced} == {release.NAMESPACE}
    assert {"ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim"} <= kinds
    (cache,) = [doc for doc in docs if doc["kind"] == "PersistentVolumeClaim"]
    assert cache["metadata"]["name"] == MODEL_CACHE_PVC


# --- pull secret, accelerators, shm, model cache -----------------------------------------------------------


def test_every_pod_pulls_with_the_secret_parameter(spec: dict) -> None:
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["image_pull_secret"]["defaultValue"] == IMAGE_PULL_SECRET
    executors = spec["deploymentSpec"]["executors"]
    for name in executors:
        (secret,) = platform(spec, name)["imagePullSecret"]
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("image_pull_secret")


def test_accelerators_are_per_step_and_an_http_teacher_asks_for_none(spec: dict) -> None:
    executors = spec["deploymentSpec"]["executors"]
    count = {
        name: executors[name]["container"]["resources"]["accelerator"]["resourceCount"]
        for name in GPU_EXECUTORS
    }
    assert "sample_accelerator_limit" in count["exec-sample-teacher"]
    assert "compress_accelerator_limit" in count["exec-compress-reasoning"]
    assert "eval_accelerator_limit" in count["exec-evaluate-students"]
    assert "gpu_accelerator_limit" in count["exec-distill-stage-2"]
    demo = (ROOT / "configs" / "demo.yaml").read_text()
    assert accelerator_arguments(parse_config(demo, base_dir=ROOT / "configs")) == {}
    served = yaml.safe_load(demo)
    for teacher in served["teachers"]:
        teacher.update(backend="openai", base_url="http://vllm.twt.svc:8000/v1", model="served")
    config = parse_config(yaml.safe_dump(served), base_dir=ROOT / "configs")
    arguments = accelerator_arguments(config)
    assert arguments["sample_accelerator_limit"] == arguments["compress_accelerator_limit"] == 0


def test_gpu_steps_get_a_memory_backed_shm_and_the_model_cache(spec: dict) -> None:
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["model_cache_pvc"]["defaultValue"] == MODEL_CACHE_PVC
    for name in spec["deploymentSpec"]["executors"]:
        config = platform(spec, name)
        shm = [m for m in config.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        caches = config.get("pvcMount", [])
        if name in GPU_EXECUTORS:
            assert shm == [
                {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": SHM_SIZE, "volumeName": "dshm"}
            ]
        else:
            assert shm == [], name
        if name in GPU_EXECUTORS or name == "exec-select-candidates":
            (cache,) = caches
            assert cache["mountPath"] == HF_HOME
            assert cache["pvcNameParameter"]["componentInputParameter"].endswith("model_cache_pvc")
        else:
            assert caches == [], name
    # the images' HF_HOME is where the cache is mounted
    for kind in ("cpu", "gpu"):
        assert f"HF_HOME={HF_HOME}" in (ROOT / "images" / kind / "Dockerfile").read_text()


# --- Kubeflow Model Registry from the promote step ---------------------------------------------------------


def test_promotion_gets_the_model_registry_secret_and_the_run_id(spec: dict) -> None:
    from pipelines.distillation import SECRET_KEYS
    from twt.registry.kubeflow import SECRET_KEYS as REGISTRY_KEYS

    assert SECRET_KEYS["model_registry"] == REGISTRY_KEYS
    (secret,) = [
        s for s in platform(spec, "exec-promote-student")["secretAsEnv"] if "model_registry_secret" in str(s)
    ]
    assert secret["optional"] is True
    assert {m["secretKey"]: m["envVar"] for m in secret["keyToEnv"]} == REGISTRY_KEYS
    promote = spec["components"]["comp-promote-student"]["inputDefinitions"]["parameters"]
    assert "pipeline_run_id" in promote
    (tasks,) = [
        c["dag"]["tasks"]
        for c in spec["components"].values()
        if "promote-student" in c.get("dag", {}).get("tasks", {})
    ]
    run_id = tasks["promote-student"]["inputs"]["parameters"]["pipeline_run_id"]
    assert run_id == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}


# --- stale specs (CI) --------------------------------------------------------------------------------------


def test_a_committed_or_published_spec_that_differs_is_stale(tmp_path: Path) -> None:
    from pipelines.stale import check_stale
    from twt.registry import pipelines as pipeline_registry

    current = release.compile_pipeline(tmp_path / "current.yaml")
    assert "is current" in check_stale(committed=current)
    assert "not published yet" in check_stale(root=str(tmp_path / "reg"))
    old = tmp_path / "old.yaml"
    old.write_text(current.read_text().replace("Samples every teacher", "Samples each teacher", 1))
    with pytest.raises(release.ReleaseError, match=r"old\.yaml is stale"):
        check_stale(committed=old)
    pipeline_registry.publish(old, tmp_path / "reg", "twt-distillation", VERSION)
    with pytest.raises(release.ReleaseError, match="bump the version"):
        check_stale(root=str(tmp_path / "reg"))
