#!/usr/bin/env bash
# Install the Debian packages the tests run as real parts, when they are missing: PostgreSQL for
# the store, and dockerd, Podman, a registry, htpasswd and a static busybox for the agent's engine
# tests, debootstrap for the container images' base, chromium for the dashboard's browser tests.
# Services are never started by the packages (policy-rc.d): tests start their own, on loopback.
# Debian's docker-compose is what the compose parity tests and bench/apply.py compare against.
set -euo pipefail

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v podman >/dev/null 2>&1 || need+=(podman)  # the agent's second engine (test_podman)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # the load generator of bench/polls.py
# what the compose parity tests compare against, and bench/apply.py
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# makes the container images' Debian base (packaging/base-image.sh)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # verifies the agent's unit
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the dashboard's browser tests
# the images' only binary: it must be the static build (an image has no libc)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || need+=(busybox-static)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "installing ${need[*]} needs root or sudo" >&2; exit 1; }
    sudo="sudo"
fi
echo "installing from Debian: ${need[*]}"
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    created=1
fi
cleanup() { if [ -n "$created" ]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq </dev/null
${sudo:+$sudo -E} apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null >/dev/null
