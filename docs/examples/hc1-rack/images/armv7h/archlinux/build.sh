#!/bin/sh
# The rack's base image, as the original scripts made it: pacstrap into a directory. Runs on an
# HC1 (Arch Linux ARM, armv7h) as an image-build job. Imported with `docker build --platform`
# (FROM scratch + ADD) rather than `docker import`, so the image records arm/v7 exactly
# (salt://imagebuild/images/base/build.sh does the same for Debian and Arch Linux ARM).
set -eu
platform=${TARGETPLATFORM:-linux/arm/v7}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/root" "$work/context"
pacstrap -c -G -M "$work/root" base
tar -C "$work/root" -cf "$work/context/rootfs.tar" .
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' > "$work/context/Dockerfile"
docker build --platform "$platform" -t "$ARMSWARM_IMAGE" "$work/context"
docker run --rm "$ARMSWARM_IMAGE" /bin/true   # smoke test
