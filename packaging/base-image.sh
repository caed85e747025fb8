#!/usr/bin/env bash
# A Debian minbase image made on this machine, without any registry: debootstrap from the
# configured Debian mirror, trimmed, then `docker import`ed.
#
#   packaging/base-image.sh TAG [PACKAGE...]
#
# PACKAGEs are installed besides python3, python3-venv and ca-certificates (the controller's base
# adds git and openssh-client). The root filesystem is cached as a tarball under $HEDGEROW_CACHE
# (default ~/.cache/hedgerow), keyed by suite, mirror, architecture and packages, and the import
# is skipped when TAG already holds that tarball: a second run takes a second. Needs root
# (debootstrap) the first time, and Debian's `debootstrap` package.
#
# Environment: DOCKER (the CLI, default docker; DOCKER_HOST as usual), SUITE (default bookworm),
# MIRROR (default: the first Debian mirror in /etc/apt/sources.list*, else deb.debian.org).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 TAG [PACKAGE...]" >&2; exit 2; }
tag=$1
shift
DOCKER=${DOCKER:-docker}
SUITE=${SUITE:-bookworm}
cache=${HEDGEROW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hedgerow}

# The first Debian (not security) archive apt uses here, in deb822 or one-line format.
configured_mirror() {
    local files=() file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] && files+=("$file")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    grep -hE '^[[:space:]]*(URIs:|deb[[:space:]])' "${files[@]}" \
        | sed -E 's/^[[:space:]]*URIs:[[:space:]]*//; s/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' \
        | awk '{print $1}' | grep -E '/debian/?$' | head -n 1
}
MIRROR=${MIRROR:-$(configured_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

packages=$(printf '%s\n' python3 python3-venv ca-certificates "$@" | sort -u | paste -sd, -)
arch=$(dpkg --print-architecture)
recipe=2  # raise when what this script does to the tree changes: earlier tarballs are stale
key=$(printf '%s %s %s %s %s' "$recipe" "$SUITE" "$MIRROR" "$arch" "$packages" \
    | sha256sum | cut -c1-16)
tarball="$cache/rootfs-$SUITE-$arch-$key.tar"

if ! command -v "$DOCKER" >/dev/null; then
    echo "$DOCKER not found: install Debian's docker.io package" >&2
    exit 1
fi
existing=$("$DOCKER" image inspect --format '{{index .Config.Labels "org.hedgerow.rootfs"}}' \
    "$tag" 2>/dev/null || true)
if [ "$existing" = "$key" ]; then
    echo "$tag: up to date ($SUITE minbase, $packages)"
    exit 0
fi

mkdir -p "$cache/debs"
# One debootstrap at a time per cache (it shares the downloaded packages): a second run waits,
# then finds the tarball the first one made.
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || {
        echo "debootstrap not found: install Debian's debootstrap package" >&2
        exit 1
    }
    [ "$(id -u)" = 0 ] || { echo "debootstrap needs root: run as root (sudo)" >&2; exit 1; }
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$root" "$root.log" "$root.tar"' EXIT
    echo "debootstrap $SUITE ($packages) from $MIRROR"
    PATH="$PATH:/usr/sbin:/sbin" debootstrap --variant=minbase --include="$packages" \
        --cache-dir="$cache/debs" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 </dev/null || {
        tail -n 30 "$root.log" >&2
        exit 1
    }
    rm -f "$root.log"
    # What a container never reads: apt's indexes and caches, documentation, translations.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
        "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/tmp/* "$root"/root/.cache
    find "$root/usr/lib" -name __pycache__ -type d -prune -exec rm -rf {} +
    chmod 0755 "$root"  # mktemp made it 0700: the image's / would shut out every other user
    tar --numeric-owner -C "$root" -cf "$root.tar" .
    mv "$root.tar" "$tarball"
fi
exec 9>&-

echo "importing $tarball as $tag"
"$DOCKER" import \
    --change "LABEL org.hedgerow.rootfs=$key" \
    --change "LABEL org.hedgerow.packages=$packages" \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$tag" >/dev/null
