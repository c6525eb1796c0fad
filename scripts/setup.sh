#!/usr/bin/env bash
# Installs what a make target needs on a fresh Debian machine, as root, idempotently.
#   scripts/setup.sh base      Debian build tools for the host
#   scripts/setup.sh cross     aarch64 rustup target, cross gcc, qemu-user, binfmt
#   scripts/setup.sh bitcoind  Bitcoin Knots from Debian sid into the cache (scripts/bitcoind.sh)
#   scripts/setup.sh electrs   the electrs Electrum server, built once into the cache (scripts/electrs.sh)
#   scripts/setup.sh vss       PostgreSQL from Debian and LDK's vss-server, built once into the
#                              cache (scripts/vss.sh)
#   scripts/setup.sh image     what builds and boots the image: mmdebstrap, filesystem tools,
#                              qemu-system-aarch64 (plus the cross step: binfmt for the arm64 root)
# A second run finds everything in place and installs nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

log() { printf 'setup: %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "installing $* needs root (run as root, or install them yourself)"
        exit 1
    fi
}

# apt_install PKG...: installs the packages that are not installed yet.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    need_root "${missing[*]}"
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_base() {
    apt_install ca-certificates build-essential pkg-config file
}

# binfmt for aarch64: lets mmdebstrap run arm64 maintainer scripts and the kernel run
# aarch64 binaries directly. Cargo itself uses the explicit qemu runner of .cargo/config.toml.
setup_binfmt() {
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        need_root "binfmt_misc"
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        need_root "binfmt for qemu-aarch64"
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || update-binfmts --import qemu-aarch64
    fi
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { log "could not register binfmt for qemu-aarch64"; exit 1; }
}

setup_cross() {
    setup_base
    apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static binfmt-support
    if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
        log "rustup target add aarch64-unknown-linux-gnu"
        rustup target add aarch64-unknown-linux-gnu
    fi
    setup_binfmt
}

setup_bitcoind() {
    apt_install mmdebstrap ca-certificates
    "$here/bitcoind.sh" provision
}

# electrs builds RocksDB (C++, with build-essential) and its bindings with bindgen (libclang).
setup_electrs() {
    setup_base
    apt_install libclang-dev
    "$here/electrs.sh" provision
}

# vss-server links OpenSSL; the tests start their own PostgreSQL cluster with Debian's binaries.
setup_vss() {
    setup_base
    apt_install libssl-dev postgresql
    "$here/vss.sh" provision
}

# The image (docs/IMAGE.md): mmdebstrap makes the arm64 root (arch-test checks that binfmt runs
# it), mkfs.vfat/mtools and mkfs.ext4 make the filesystems without mounting them, xz packs the
# image, qemu-system-aarch64 boots it in the boot test.
setup_image() {
    setup_cross
    apt_install mmdebstrap arch-test dosfstools mtools e2fsprogs xz-utils qemu-system-arm
}

for what in "${@:-base}"; do
    case "$what" in
        base) setup_base ;;
        cross) setup_cross ;;
        bitcoind) setup_bitcoind ;;
        electrs) setup_electrs ;;
        vss) setup_vss ;;
        image) setup_image ;;
        *) log "unknown setup step '$what' (base, cross, bitcoind, electrs, vss, image)"; exit 2 ;;
    esac
done
