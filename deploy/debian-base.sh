#!/usr/bin/env bash
# Make the base image `debian:bookworm-slim` from Debian's own packages when no registry can be reached.
#
# Anyone who can pull docker.io/library/debian:bookworm-slim does not need this. On machines without a registry
# (see ../shared/CONTAINERS.md) it builds a minbase rootfs with debootstrap, trims it as the official slim image
# is trimmed (no apt lists or caches, no docs, man pages or locales, and dpkg told not to install them again),
# and imports it under the same name, so the Dockerfile builds unchanged. The rootfs is kept under
# $ZAPGATE_CACHE (default ~/.cache/zapgate) and reused; an image already there under that name is kept.
#
#   deploy/debian-base.sh            # idempotent: ~1 min the first time, nothing afterwards
set -euo pipefail

IMAGE=docker.io/library/debian:bookworm-slim
CACHE=${ZAPGATE_CACHE:-$HOME/.cache/zapgate}
ROOTFS=$CACHE/debian-bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$IMAGE"; then
    exit 0
fi
if [ ! -f "$ROOTFS/.complete" ]; then
    mkdir -p "$CACHE"
    rm -rf "$ROOTFS.tmp"
    echo "debian-base: debootstrap bookworm (minbase) from $MIRROR into $ROOTFS ..." >&2
    debootstrap --variant=minbase bookworm "$ROOTFS.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    # as the official slim image: dpkg leaves documentation out, apt keeps no package files or lists
    cat >"$ROOTFS.tmp/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
    cat >"$ROOTFS.tmp/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
    echo 'Acquire::Languages "none";' >"$ROOTFS.tmp/etc/apt/apt.conf.d/docker-no-languages"
    rm -f "$ROOTFS.tmp/etc/apt/sources.list"
    cat >"$ROOTFS.tmp/etc/apt/sources.list.d/debian.sources" <<'CFG'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG
    (
        cd "$ROOTFS.tmp"
        rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* var/log/* tmp/* \
            usr/share/man/* usr/share/info/* usr/share/groff/* usr/share/lintian/* usr/share/linda/*
        find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
        find usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    )
    touch "$ROOTFS.tmp/.complete"
    rm -rf "$ROOTFS"
    mv "$ROOTFS.tmp" "$ROOTFS"
fi
echo "debian-base: importing $ROOTFS as $IMAGE" >&2
tar --exclude=./.complete -C "$ROOTFS" -c . | podman import --quiet - "$IMAGE" >/dev/null
