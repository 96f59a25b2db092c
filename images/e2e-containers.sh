#!/usr/bin/env bash
# make e2e-containers: the smoke DAG with every step in the CPU image, from a fresh clone.
#
#   1. container tools: podman, buildah, debootstrap, runc (apt, as root) unless docker answers
#   2. the CPU image, offline here (images/build.sh --offline: Debian base from debootstrap, local torch)
#   3. a Docker-API socket: Docker's, else `podman system service` on a private socket (stopped at exit)
#   4. tests/e2e_containers.py: local S3, the DAG in containers, promotion to S3, pull on the host, and a
#      run whose step fails inside its container (it must fail the run)
#
# The GPU steps run in the CPU image here (no GPU image on a CPU machine): pipelines.containers maps both.
# Prints the wall time of each part. Needs the project venv (make install).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
python=${PYTHON:-.venv/bin/python}
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n1)
image=${E2E_IMAGE:-ghcr.io/twt-project/twt-cpu:$version}

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
else
    engine=podman
    if ! command -v podman >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1 \
        || ! command -v runc >/dev/null 2>&1; then
        [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 \
            || { echo "e2e-containers: install podman, buildah, debootstrap and runc (needs root and apt)" >&2; exit 1; }
        echo "e2e-containers: installing podman buildah debootstrap runc"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq  # a fresh machine has no package lists yet
        apt-get install -y -qq podman buildah debootstrap runc >/dev/null
    fi
fi
tools=$(date +%s)

CONTAINER_ENGINE=$engine images/build.sh --offline cpu
built=$(date +%s)

if [ "$engine" = podman ]; then
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/images/containers.conf}
    sock_dir=$(mktemp -d "${TMPDIR:-/tmp}/twt-podman.XXXXXX")
    # the service's own log (podman 4.3 logs systemd healthcheck-timer errors there) is shown on failure only
    podman system service --time=0 "unix://$sock_dir/podman.sock" 2>"$sock_dir/service.log" &
    service=$!
    stop_service() {
        local status=$?
        kill "$service" 2>/dev/null || true
        wait "$service" 2>/dev/null || true
        [ "$status" -eq 0 ] || { echo "e2e-containers: podman service log:" >&2; tail -n 20 "$sock_dir/service.log" >&2; }
        rm -rf "$sock_dir"
    }
    trap stop_service EXIT
    export DOCKER_HOST="unix://$sock_dir/podman.sock"
    for _ in $(seq 50); do [ -S "$sock_dir/podman.sock" ] && break; sleep 0.2; done
fi

"$python" tests/e2e_containers.py --image "$image"
end=$(date +%s)
echo "e2e-containers: ok in $(( end - start )) s (tools $(( tools - start )) s, image $(( built - tools )) s," \
    "DAG and checks $(( end - built )) s) with $engine"
