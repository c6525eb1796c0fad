#!/usr/bin/env bash
# A real bitcoind for the tests: Bitcoin Knots from Debian's `bitcoin-knots` package (suite
# sid), unpacked into a small sid root in the cache and run through that root's own loader and
# libraries (no chroot, so it sees the test's temp dir).
#   scripts/bitcoind.sh provision   build the root once; later runs only check it (seconds)
#   scripts/bitcoind.sh path        print the directory holding the bitcoind/bitcoin-cli wrappers
# Cache: $BOLTBOX_CACHE (default /var/cache/boltbox)/bitcoind.
set -euo pipefail

cache="${BOLTBOX_CACHE:-/var/cache/boltbox}/bitcoind"
root="$cache/root"
bin="$cache/bin"
stamp="$cache/provisioned"

log() { printf 'bitcoind: %s\n' "$*" >&2; }

write_wrapper() {
    local name="$1"
    cat >"$bin/$name.tmp" <<WRAP
#!/bin/sh
# Runs $name from the sid root at $root through that root's own loader and libraries.
exec "$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \\
    --library-path "$root/usr/lib/x86_64-linux-gnu" "$root/usr/bin/$name" "\$@"
WRAP
    chmod 0755 "$bin/$name.tmp"
    mv "$bin/$name.tmp" "$bin/$name"
}

provision() {
    if [ -f "$stamp" ] && "$bin/bitcoind" -version >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        log "provisioning the sid root needs root (mmdebstrap)"
        exit 1
    fi
    mkdir -p "$cache"
    # Build next to the final place, then swap: an interrupted run never leaves a half root.
    local work="$cache/root.new"
    rm -rf "$work"
    log "building a sid root with bitcoin-knots (once; cached in $cache)"
    mmdebstrap --quiet --variant=essential --include=bitcoin-knots \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        sid "$work"
    rm -rf "$root"
    mv "$work" "$root"
    mkdir -p "$bin"
    write_wrapper bitcoind
    write_wrapper bitcoin-cli
    "$bin/bitcoind" -version | head -n1 >"$stamp"
    log "ready: $(cat "$stamp")"
}

case "${1:-provision}" in
    provision) provision ;;
    path) echo "$bin" ;;
    *) log "usage: $0 provision|path"; exit 2 ;;
esac
