#!/usr/bin/env bash
# Build Hedgerow's container images without internet access during the build (`make images`):
#
#   packaging/images.sh [agent] [controller]      (both when none is named)
#
# 1. The base images, Debian minbase made here (packaging/base-image.sh): python3 for the agent,
#    plus git and ssh for the controller, which fetches the repository it follows.
# 2. Wheels on the host: Hedgerow's own, and binary wheels of every dependency for the image's
#    Python and glibc (downloaded from the package index, whatever Python the host has).
# 3. `docker build --network none` of packaging/Dockerfile.agent and Dockerfile.controller, each
#    installing from those wheels alone (`pip install --no-index`) into a venv.
#
# Environment: AGENT_IMAGE, CONTROLLER_IMAGE (the tags, default hedgerow/agent:VERSION and
# hedgerow/controller:VERSION), BASE_IMAGE, CONTROLLER_BASE_IMAGE, DOCKER (the CLI; DOCKER_HOST
# names the engine), PIP (default python3 -m pip), HEDGEROW_CACHE (see base-image.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(dirname "$here")
DOCKER=${DOCKER:-docker}
PIP=${PIP:-python3 -m pip}
# bookworm's: the wheels must suit the image's interpreter and C library, not the host's
PYTHON_VERSION=3.11
GLIBC_MINOR=36
BASE_IMAGE=${BASE_IMAGE:-hedgerow/base:bookworm}
CONTROLLER_BASE_IMAGE=${CONTROLLER_BASE_IMAGE:-hedgerow/base:bookworm-git}

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(agent controller)
for image in "${wanted[@]}"; do
    case $image in
        agent | controller) ;;
        *) echo "unknown image '$image': agent or controller" >&2; exit 2 ;;
    esac
done
command -v "$DOCKER" >/dev/null || { echo "$DOCKER not found: install Debian's docker.io package" >&2; exit 1; }

context=$(mktemp -d "${TMPDIR:-/tmp}/hedgerow-images.XXXXXX")
trap 'rm -rf "$context"' EXIT
mkdir "$context/wheels"

echo "wheels for CPython $PYTHON_VERSION, glibc 2.$GLIBC_MINOR"
$PIP wheel --quiet --no-deps --wheel-dir "$context/wheels" "$source_dir"
wheel=$(ls "$context"/wheels/hedgerow-*.whl)
version=$(basename "$wheel" | cut -d- -f2)
machine=$(uname -m)
platforms=()
for minor in $(seq "$GLIBC_MINOR" -1 17); do
    platforms+=(--platform "manylinux_2_${minor}_$machine")
done
platforms+=(--platform "manylinux2014_$machine")
extras=""
for image in "${wanted[@]}"; do
    [ "$image" = controller ] && extras="[controller]"
done
# hedgerow[controller] holds the agent's dependencies too: one set of wheels serves both images
$PIP download --quiet --only-binary=:all: --implementation cp \
    --python-version "$PYTHON_VERSION" --abi "cp${PYTHON_VERSION/./}" "${platforms[@]}" \
    --dest "$context/wheels" "$wheel$extras"

build() {  # build NAME TAG BASE
    echo "building $2 on $3"
    # the classic builder: Debian's dockerd 20.10 has no BuildKit frontend without a registry
    DOCKER_BUILDKIT=0 "$DOCKER" build --quiet --network none --force-rm \
        --build-arg "BASE=$3" --build-arg "VERSION=$version" \
        --file "$here/Dockerfile.$1" --tag "$2" "$context" >/dev/null
    # the install stage, untagged, with the wheels and pip: no later build reuses it
    "$DOCKER" image prune --force --filter label=org.hedgerow.stage=install >/dev/null
    "$DOCKER" image inspect --format "$2: {{.Size}} bytes" "$2"
}

for image in "${wanted[@]}"; do
    if [ "$image" = agent ]; then
        "$here/base-image.sh" "$BASE_IMAGE"
        build agent "${AGENT_IMAGE:-hedgerow/agent:$version}" "$BASE_IMAGE"
    else
        "$here/base-image.sh" "$CONTROLLER_BASE_IMAGE" git openssh-client
        build controller "${CONTROLLER_IMAGE:-hedgerow/controller:$version}" "$CONTROLLER_BASE_IMAGE"
    fi
done
