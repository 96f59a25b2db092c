#!/usr/bin/env bash
# System tools the tests use beyond the Python venv (which already brings hadolint and kubernetes-validate):
#   kubectl with a built-in kustomize >= v4, for `kubectl kustomize manifests/overlays/<x>` (tests/test_manifests.py).
# Idempotent and quick: does nothing when a suitable kubectl is on PATH (this project's machines ship the
# `kubectl` package: kubectl v1.32, kustomize v5.5). Otherwise, as root on Debian/Ubuntu, installs the
# distribution's kubectl (package `kubectl`, or `kubernetes-client` where that is the only one) and
# checks again. Exits non-zero, saying why, when no suitable kubectl results: `make tools` then fails in CI
# (CI set), and elsewhere warns that the manifest tests will skip.
set -euo pipefail

min_kustomize_major=4

kustomize_major() {
    # "Kustomize Version: v5.5.0" -> 5; 0 when kubectl is missing or too old to report it.
    local major
    major=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\{0,1\}\([0-9][0-9]*\).*/\1/p')
    echo "${major:-0}"
}

suitable() {
    command -v kubectl >/dev/null 2>&1 && [ "$(kustomize_major)" -ge "$min_kustomize_major" ]
}

report() {
    echo "install-tools: $(command -v kubectl): $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
}

if suitable; then
    report
    exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: no kubectl with kustomize >= v$min_kustomize_major, and not root with apt-get;" \
        "install kubectl by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends kubectl \
    || apt-get install -y -qq --no-install-recommends kubernetes-client

if suitable; then
    report
    exit 0
fi
echo "install-tools: the distribution's kubectl has kustomize v$(kustomize_major) (< v$min_kustomize_major):" \
    "install a newer kubectl by hand" >&2
exit 1
