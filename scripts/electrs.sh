#!/usr/bin/env bash
# A real Electrum server for the tests: electrs, the published crate, built once with cargo and
# cached outside the clone. Version 0.11 fetches blocks over P2P; 0.12 needs a REST call
# (/rest/blockpart) that the tests' Bitcoin Knots 29 does not have. Its RocksDB is built from
# the crate's bundled sources (Debian bookworm's librocksdb-dev 7.8 is older than the 9.10 API
# it uses): about 18 CPU-minutes, once.
#   scripts/electrs.sh provision   build it once; later runs only check it (seconds)
#   scripts/electrs.sh path        print the directory holding the electrs binary
# Cache: $BOLTBOX_CACHE (default /var/cache/boltbox)/electrs.
set -euo pipefail

version=0.11.1
cache="${BOLTBOX_CACHE:-/var/cache/boltbox}/electrs"
bin="$cache/bin"
stamp="$cache/provisioned-$version"

log() { printf 'electrs: %s\n' "$*" >&2; }

provision() {
    if [ -f "$stamp" ] && "$bin/electrs" --version >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$cache"
    log "building electrs $version (once, about 10 minutes on two cores; cached in $cache)"
    # Its own target dir: the project's builds and this one never invalidate each other. It is
    # removed afterwards; only the binary is kept.
    CARGO_TARGET_DIR="$cache/build" cargo install electrs --version "$version" --locked --root "$cache" --force --quiet
    rm -rf "$cache/build"
    "$bin/electrs" --version >/dev/null
    printf '%s\n' "$version" >"$stamp"
    log "ready: $bin/electrs"
}

case "${1:-provision}" in
    provision) provision ;;
    path) echo "$bin" ;;
    *) log "usage: $0 provision|path"; exit 2 ;;
esac
