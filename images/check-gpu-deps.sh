#!/usr/bin/env bash
# Does the GPU image's dependency set resolve? (make gpu-deps-check; no GPU, no image build, no wheel download)
#
# Runs pip's resolver as the GPU image's build does (images/gpu/Dockerfile: vllm + torch at its pins + the twt
# package, no constraints.txt), for the image's Python: CPython 3.12 on manylinux x86_64 (Ubuntu 24.04,
# glibc 2.39). `--dry-run --report` reads package metadata only (PyPI serves it apart from the wheels). The
# twt wheel and kfp-server-api (published as an sdist only, which a cross-platform resolve cannot build)
# are built here first. Prints the resolved vllm, torch, transformers and CUDA wheels; exits non-zero with
# pip's reason when the set does not resolve. Extra pip options (e.g. --extra-index-url for the CUDA 12
# variant) go in PIP_EXTRA_INDEX_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
vllm=$(sed -n 's/^ARG VLLM_VERSION=//p' images/gpu/Dockerfile)
torch=$(sed -n 's/^ARG TORCH_VERSION=//p' images/gpu/Dockerfile)
server_api=$(sed -n 's/^kfp-server-api==//p' constraints.txt)
work=$(mktemp -d "${TMPDIR:-/tmp}/twt-gpu-deps.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$python" -m pip wheel -q --no-deps --no-build-isolation -w "$work" . >/dev/null
"$python" -m pip wheel -q --no-deps -w "$work" "kfp-server-api==$server_api" >/dev/null
platforms=()
for minor in $(seq 39 -1 5); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
platforms+=(--platform linux_x86_64)
"$python" -m pip install --dry-run --ignore-installed --quiet --report "$work/report.json" \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none "${platforms[@]}" \
    --only-binary=:all: --find-links "$work" \
    "vllm==$vllm" "torch==$torch" "$(ls "$work"/twt-*.whl)"
"$python" - "$work/report.json" <<'PY'
import json, sys
installed = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
cuda = sorted(name for name in installed if name.startswith("nvidia-"))
shown = {name: installed.get(name) for name in ("twt", "vllm", "torch", "transformers", "kfp", "triton")}
print(f"gpu-deps: {len(installed)} packages resolve for CPython 3.12 manylinux x86_64: {shown}")
print(f"gpu-deps: CUDA wheels: {', '.join(f'{n}=={installed[n]}' for n in cuda)}")
PY
