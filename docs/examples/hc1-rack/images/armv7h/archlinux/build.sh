#!/bin/sh
# The rack's base image, as the original scripts made it: pacstrap into a directory, then
# `docker import`. Runs on an HC1 (Arch Linux ARM, armv7h) as an image-build job.
set -eu
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pacstrap -c -G -M "$root" base
tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' - "$ARMSWARM_IMAGE"
docker run --rm "$ARMSWARM_IMAGE" /bin/true   # smoke test
