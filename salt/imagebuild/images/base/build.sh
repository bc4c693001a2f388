#!/bin/sh
# The tree's base image: a real root filesystem of the platform this job builds for, made on
# the build node and imported with `docker build --platform` (FROM scratch + ADD), so the image
# is recorded with that platform and every child runs that platform's programs.
#
#   Debian (default):       mmdebstrap --arch=armhf|arm64|… (debootstrap --arch without it)
#   Arch Linux ARM boards:  BASE_DISTRO=archlinuxarm: pacstrap with an Arch Linux ARM
#                           pacman.conf (armv7h / aarch64), as on the HC1 author's cluster
#
# The platform comes from the build farm (TARGETPLATFORM, TARGETARCH, TARGETVARIANT, as BuildKit
# names them); without it, the node's own architecture. Settings from the environment:
#   BASE_DISTRO=debian|archlinuxarm  BASE_SUITE=bookworm  BASE_MIRROR=<Debian mirror>
#   BASE_PACKAGES="busybox"          ARMSWARM_ROOTFS_CACHE=/var/cache/armswarm/rootfs
#   BASE_SLIM=1|0                    1 (default): no manuals, info pages, translations or
#                                    documentation but the copyrights, now and for every
#                                    package the children install (as Debian's -slim images)
#   ARMSWARM_DRY_RUN=1               print the commands instead of running them
# A cache directory that exists keeps each root filesystem by content (distro, suite,
# architecture, packages, recipe); a board normally has none and bootstraps every time.
set -eu

# 2: slim (dpkg path excludes) and merged /usr without the usrmerge package (and its perl)
RECIPE=2
: "${ARMSWARM_IMAGE:?ARMSWARM_IMAGE names the image to create}"
BASE_DISTRO=${BASE_DISTRO:-debian}
BASE_SUITE=${BASE_SUITE:-bookworm}
# busybox: the applets the tree's children use (httpd, wget, uptime, hostname) on minbase
BASE_PACKAGES=${BASE_PACKAGES:-busybox}
BASE_SLIM=${BASE_SLIM:-1}
CACHE=${ARMSWARM_ROOTFS_CACHE:-/var/cache/armswarm/rootfs}
DRY=${ARMSWARM_DRY_RUN:-}

run() {
    if [ -n "$DRY" ]; then
        echo "+ $*"
    else
        "$@"
    fi
}

die() {
    echo "build.sh: $*" >&2
    exit 1
}

native_arch() {
    case $(uname -m) in
        x86_64) echo amd64 ;;
        aarch64 | arm64) echo arm64 ;;
        armv7l | armv7*) echo arm/v7 ;;
        armv6l) echo arm/v6 ;;
        *) die "unknown machine $(uname -m): set TARGETPLATFORM" ;;
    esac
}

# -- the platform ---------------------------------------------------------------------------
if [ -z "${TARGETARCH:-}" ]; then
    if [ -n "${TARGETPLATFORM:-}" ]; then
        spec=${TARGETPLATFORM#*/}
    else
        spec=$(native_arch)
    fi
    TARGETARCH=${spec%%/*}
    case $spec in */*) TARGETVARIANT=${spec#*/} ;; *) TARGETVARIANT= ;; esac
fi
TARGETVARIANT=${TARGETVARIANT:-}
platform="linux/$TARGETARCH${TARGETVARIANT:+/$TARGETVARIANT}"

# What each distribution calls that platform, and what `uname -m` says on it.
case "$TARGETARCH/$TARGETVARIANT" in
    arm64/ | arm64/v8) debarch=arm64 alarch=aarch64 machine=aarch64 ;;
    arm/v7) debarch=armhf alarch=armv7h machine=armv7l ;;
    arm/v6 | arm/v5) debarch=armel alarch=armv6h machine="armv${TARGETVARIANT#v}l" ;;
    amd64/) debarch=amd64 alarch= machine=x86_64 ;;
    *) die "no root filesystem recipe for platform $platform" ;;
esac

case $BASE_DISTRO in
    debian | archlinuxarm) ;;
    *) die "BASE_DISTRO must be debian or archlinuxarm, not $BASE_DISTRO" ;;
esac
case $BASE_SLIM in
    0 | 1) ;;
    *) die "BASE_SLIM must be 1 or 0, not $BASE_SLIM" ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ctx="$work/context"
mkdir -p "$ctx"
tarball="$ctx/rootfs.tar"

# -- the root filesystem ----------------------------------------------------------------------
# Links for the busybox applets the children call by name; the architecture file is written by
# the root filesystem's own dpkg (run through binfmt when the node is not that platform).
links='for a in httpd wget uptime hostname; do [ -e "$1/usr/bin/$a" ] || ln -s /bin/busybox "$1/usr/bin/$a"; done'
arch_file='chroot "$1" dpkg --print-architecture > "$1/etc/armswarm-base-arch"'
# What a slim root leaves out, as dpkg path filters (the last matching one wins): the layer every
# board pushes and pulls, 60 MB instead of 145 for armhf, 100 instead of 195 for arm64.
slim_filters='path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright'
[ "$BASE_SLIM" = 1 ] || slim_filters=

debian_rootfs() {
    mirror=${BASE_MIRROR:-}
    if [ -z "$mirror" ]; then
        # The mirror this node's own apt uses (a board may only reach its local mirror).
        mirror=$(awk '$1 == "deb" && $2 !~ /^\[/ && $2 !~ /security/ {print $2; exit}' \
            /etc/apt/sources.list 2>/dev/null || true)
    fi
    if [ -z "$mirror" ]; then
        mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | grep -v security | head -n 1 || true)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
    if command -v mmdebstrap >/dev/null 2>&1 || [ -n "$DRY" ]; then
        # check/qemu: mmdebstrap cannot see the host's binfmt handlers from inside a container
        # and would want qemu in the node; the kernel runs foreign binaries (flag F) anyway.
        skip=
        [ "$debarch" = "$(dpkg --print-architecture 2>/dev/null || echo none)" ] \
            || skip=--skip=check/qemu
        # merged /usr as debootstrap makes it (usr-is-merged), not through the usrmerge
        # package: that one pulls perl into an otherwise perl-free root
        hooks=
        merged=/usr/share/mmdebstrap/hooks/maybe-merged-usr
        [ ! -d "$merged" ] || hooks="--hook-dir=$merged"
        # mmdebstrap keeps --dpkgopt in the root's dpkg.cfg.d: the children's installs are slim
        set --
        set -f # the filters' * are dpkg's, not the shell's
        for filter in $slim_filters; do set -- "$@" "--dpkgopt=$filter"; done
        set +f
        run mmdebstrap --variant=minbase --arch="$debarch" $skip $hooks "$@" \
            --include="$(echo "$BASE_PACKAGES" | tr ' ' ',')" \
            --customize-hook="$links" --customize-hook="$arch_file" \
            "$BASE_SUITE" "$tarball" "$mirror" </dev/null
    else
        root="$work/root"
        run debootstrap --variant=minbase --arch="$debarch" \
            --include="$(echo "$BASE_PACKAGES" | tr ' ' ',')" "$BASE_SUITE" "$root" "$mirror"
        run sh -c "set -- '$root'; $links; $arch_file"
        if [ -n "$slim_filters" ]; then
            # the same filters for the children's installs, and what debootstrap already put
            # there removed as dpkg would have left it out
            run sh -c "printf '%s\n' '$slim_filters' > '$root/etc/dpkg/dpkg.cfg.d/armswarm-slim'"
            run sh -c "cd '$root/usr/share' && rm -rf man/* info/* \
                && { [ ! -d locale ] || find locale -mindepth 1 -maxdepth 1 \
                    ! -name locale.alias -exec rm -rf {} +; } \
                && { [ ! -d doc ] || find doc -mindepth 1 ! -type d ! -name copyright \
                    -exec rm -f {} +; }"
        fi
        run tar -C "$root" -cf "$tarball" .
    fi
}

archlinuxarm_rootfs() {
    [ -n "$alarch" ] || die "Arch Linux ARM has no $platform"
    root="$work/root"
    mkdir -p "$root"
    conf="$work/pacman.conf"
    # pacman's form of the slim filters (for the bootstrap; the root's own pacman.conf is the
    # distribution's)
    noextract=
    [ -z "$slim_filters" ] || noextract='NoExtract = usr/share/man/* usr/share/info/* usr/share/doc/* usr/share/locale/* !usr/share/locale/locale.alias'
    cat >"$conf" <<EOF
[options]
Architecture = $alarch
SigLevel = Required DatabaseOptional
$noextract
[core]
Server = ${ALARM_MIRROR:-http://mirror.archlinuxarm.org}/\$arch/\$repo
[extra]
Server = ${ALARM_MIRROR:-http://mirror.archlinuxarm.org}/\$arch/\$repo
EOF
    [ -z "$DRY" ] || sed 's/^/| /' "$conf"
    # -c: the host's package cache, -G: the host's keyring, -M: not its mirror list
    run pacstrap -C "$conf" -c -G -M "$root" base $BASE_PACKAGES
    run sh -c "echo $alarch > '$root/etc/armswarm-base-arch'"
    run tar -C "$root" -cf "$tarball" .
}

# The cache key: everything the root filesystem is made from (not the mirror or the date).
key=$(printf '%s\n' "$RECIPE" "$BASE_DISTRO" "$BASE_SUITE" "$debarch" "$alarch" "$BASE_PACKAGES" \
    "$links" "$arch_file" "$slim_filters" | sha256sum | cut -c1-16)
cached="$CACHE/$BASE_DISTRO-$BASE_SUITE-$debarch-$key.tar"
if [ -f "$cached" ]; then
    echo "root filesystem from the cache: $cached"
    run cp "$cached" "$tarball"
else
    echo "making a $BASE_DISTRO $BASE_SUITE root filesystem for $platform"
    "${BASE_DISTRO}_rootfs" || die "$BASE_DISTRO root filesystem for $platform failed"
    if [ -d "$CACHE" ] && [ -w "$CACHE" ]; then
        # atomic: another node (of this or another lab: same hostnames, maybe the same PIDs)
        # may be reading or writing the same key
        partial="$cached.partial.$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
        run cp "$tarball" "$partial"
        run mv "$partial" "$cached"
    fi
fi

# -- the image ---------------------------------------------------------------------------------
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/sh"]\n' >"$ctx/Dockerfile"
run docker build --platform "$platform" -t "$ARMSWARM_IMAGE" "$ctx"
# Smoke test before anything builds on it: the image's own programs say what they run on.
if [ -z "$DRY" ]; then
    got=$(docker run --rm --platform "$platform" "$ARMSWARM_IMAGE" /bin/sh -c 'uname -m')
    [ "$got" = "$machine" ] || die "$platform image runs as $got, not $machine"
    echo "base ok: $platform, uname -m $got, $(docker run --rm --platform "$platform" \
        "$ARMSWARM_IMAGE" cat /etc/armswarm-base-arch)"
fi
