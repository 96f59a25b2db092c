#!/usr/bin/env bash
# Build the twt images (make images): docker where a daemon answers, else podman (buildah underneath).
#
#   images/build.sh [options] [cpu] [gpu]          # default: both
#     --registry REG       image names REG/twt-{cpu,gpu}:VERSION (default ghcr.io/twt-project)
#     --engine E           docker or podman (default: docker if `docker info` works, else podman)
#     --offline            no base image from a registry: make the CPU base from Debian packages
#                          (images/make-base.sh); with podman, torch from /opt/wheels when it exists
#     --wheels DIR         mounted into the build and searched by pip (PIP_FIND_LINKS); podman only
#     --build-arg K=V      passed on to every build (e.g. BASE_IMAGE, TORCH_INDEX_URL, CUDA variant args)
#
# Prints each image's build time and size. With podman, CONTAINERS_CONF defaults to images/containers.conf
# and the host's CA bundle is mounted into the build (pip then trusts what the host trusts).
set -euo pipefail
cd "$(dirname "$0")/.."

registry=${TWT_IMAGE_REGISTRY:-ghcr.io/twt-project}
engine=${CONTAINER_ENGINE:-}
offline=0
wheels=""
build_args=()
which=()
while [ $# -gt 0 ]; do
    case "$1" in
        --registry) registry=$2; shift 2 ;;
        --engine) engine=$2; shift 2 ;;
        --offline) offline=1; shift ;;
        --wheels) wheels=$2; shift 2 ;;
        --build-arg) build_args+=(--build-arg "$2"); shift 2 ;;
        cpu|gpu) which+=("$1"); shift ;;
        *) echo "build: unknown argument $1 (see images/build.sh)" >&2; exit 2 ;;
    esac
done
[ ${#which[@]} -gt 0 ] || which=(cpu gpu)
registry=${registry%/}
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n1)

if [ -z "$engine" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker
    elif command -v podman >/dev/null 2>&1; then engine=podman
    else
        echo "build: no container engine: neither a docker daemon (docker info) nor podman" \
            "(apt-get install podman buildah)" >&2
        exit 1
    fi
fi
engine_args=()
if [ "$engine" = podman ]; then
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/images/containers.conf}
    engine_args+=(--runtime runc --format docker)  # docker format keeps HEALTHCHECK NONE
    ca=/etc/ssl/certs/ca-certificates.crt
    [ -f "$ca" ] && engine_args+=(-v "$ca:$ca:ro")
fi
if [ "$offline" = 1 ]; then
    base=localhost/twt-base:bookworm-py3.11
    CONTAINER_ENGINE=$engine images/make-base.sh "$base"
    cpu_offline_args=(--build-arg "BASE_IMAGE=$base")
    if [ -z "$wheels" ] && [ "$engine" = podman ] && [ -d /opt/wheels ]; then wheels=/opt/wheels; fi
    # torch from the local wheel directory when there is one (the PyTorch index may be unreachable too)
    [ -n "$wheels" ] && cpu_offline_args+=(--build-arg "TORCH_INDEX_URL=https://pypi.org/simple")
fi
if [ -n "$wheels" ]; then
    [ "$engine" = podman ] || { echo "build: --wheels needs podman (docker build cannot mount a directory)" >&2; exit 2; }
    [ -d "$wheels" ] || { echo "build: no wheel directory $wheels" >&2; exit 2; }
    engine_args+=(-v "$wheels:$wheels:ro" --build-arg "PIP_FIND_LINKS=$wheels")
fi

for name in "${which[@]}"; do
    image=$registry/twt-$name:$version
    extra=()
    [ "$name" = cpu ] && [ "$offline" = 1 ] && extra=("${cpu_offline_args[@]}")
    echo "build: $image with $engine (images/$name/Dockerfile)"
    start=$(date +%s)
    "$engine" build "${engine_args[@]}" "${extra[@]}" ${build_args[@]+"${build_args[@]}"} \
        --build-arg "TWT_VERSION=$version" -f "images/$name/Dockerfile" -t "$image" .
    seconds=$(( $(date +%s) - start ))
    size=$("$engine" image inspect --format '{{.Size}}' "$image")
    echo "build: $image built in ${seconds} s, $(( size / 1000000 )) MB"
done
