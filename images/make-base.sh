#!/usr/bin/env bash
# Make the CPU image's Python base from Debian packages, for machines that reach no container registry.
#
#   images/make-base.sh [IMAGE]        # default localhost/twt-base:bookworm-py3.11
#
# debootstrap (minbase) a Debian bookworm root file system with python3, python3-venv and the CA
# certificates, from the apt mirror this machine already uses, and import it as IMAGE with podman (or
# docker). Bookworm's python3 is 3.11, like the default base python:3.11.14-slim-bookworm. Then:
#
#   make images BASE_IMAGE=localhost/twt-base:bookworm-py3.11
#
# Idempotent: does nothing when IMAGE exists. Needs root and debootstrap (apt-get install debootstrap).
set -euo pipefail

image=${1:-localhost/twt-base:bookworm-py3.11}
suite=bookworm
packages=python3,python3-venv,ca-certificates

engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker
    elif command -v podman >/dev/null 2>&1; then engine=podman
    else echo "make-base: neither a running docker nor podman found" >&2; exit 1
    fi
fi

if "$engine" image inspect "$image" >/dev/null 2>&1; then
    echo "make-base: $image exists"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || { echo "make-base: debootstrap not installed (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "make-base: debootstrap needs root" >&2; exit 1; }

# The mirror this machine's apt uses (deb822 .sources or a classic sources.list), else Debian's.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/twt-base.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
echo "make-base: debootstrap $suite from $mirror (minbase + $packages)"
start=$(date +%s)
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; echo "make-base: debootstrap failed" >&2; exit 1; }
rm -f "$rootfs.log"
# No apt lists or caches in the image (the Dockerfile installs nothing with apt).
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$image" >/dev/null
echo "make-base: $image ($(( $(date +%s) - start )) s)"
