#!/bin/sh
# The cluster's base image is not a Dockerfile: a root filesystem imported with `docker import`
# (on the original cluster: pacstrap of Arch Linux ARM). Here: Debian's static busybox.
set -eu
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/www"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$rootfs/etc/armswarm-base"
tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/sh"]' - "$ARMSWARM_IMAGE"
# Smoke test before anything builds on it.
docker run --rm "$ARMSWARM_IMAGE" /bin/sh -c 'echo base ok'
