#!/usr/bin/env bash
# LDK's Versioned Storage Service for the tests: vss-server, the published crate (its default
# features: JWT and signature authorizers, PostgreSQL backend), built once with cargo and
# cached outside the clone. It links OpenSSL (libssl-dev) and builds libsecp256k1 (a C
# compiler). PostgreSQL itself is Debian's (scripts/setup.sh vss); the tests run their own
# cluster on loopback (tests/src/vss.rs).
#   scripts/vss.sh provision   build it once; later runs only check it (seconds)
#   scripts/vss.sh path        print the directory holding the vss-server binary
# Cache: $BOLTBOX_CACHE (default /var/cache/boltbox)/vss.
set -euo pipefail

version=0.1.0-alpha.0
cache="${BOLTBOX_CACHE:-/var/cache/boltbox}/vss"
bin="$cache/bin"
stamp="$cache/provisioned-$version"

log() { printf 'vss: %s\n' "$*" >&2; }

provision() {
    if [ -f "$stamp" ] && [ -x "$bin/vss-server" ]; then
        return 0
    fi
    mkdir -p "$cache"
    log "building vss-server $version (once, a few minutes on two cores; cached in $cache)"
    # Its own target dir, removed afterwards: only the binary is kept.
    CARGO_TARGET_DIR="$cache/build" cargo install vss-server --version "$version" --locked --root "$cache" --force --quiet
    rm -rf "$cache/build"
    [ -x "$bin/vss-server" ]
    printf '%s\n' "$version" >"$stamp"
    log "ready: $bin/vss-server"
}

case "${1:-provision}" in
    provision) provision ;;
    path) echo "$bin" ;;
    *) log "usage: $0 provision|path"; exit 2 ;;
esac
