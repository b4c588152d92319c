#!/usr/bin/env bash
# Installs what the build and the Kafka/ZooKeeper tests need on Debian 12 (run as root; CI
# runs it from .ci/run). Idempotent: whatever is already there is skipped.
#
#   - cmake, libcurl4-openssl-dev: the rdkafka crate builds its bundled librdkafka with them
#     (feature cmake-build; without the curl headers the C build fails).
#   - zookeeper (Debian's 3.8, with a Java runtime): the coordinator for hot failover.
#   - nisshi 0.8.1: the Kafka-protocol broker the tests run against (docs/kafka-brokers.md).
#     Taken from ../shared/bin/nisshi-0.8.1.gz when present (checked against its sha256),
#     else built with `cargo install` (about 35 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

NISSHI_VERSION=0.8.1
BIN_DIR="${CARGO_HOME:-$HOME/.cargo}/bin"

log() { echo "== install-deps: $*"; }

SUDO=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=(sudo); fi

# --- Debian packages -----------------------------------------------------------------------
missing=()
for pkg in cmake libcurl4-openssl-dev zookeeper; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        log "missing packages ${missing[*]} and no apt-get: install them by hand" >&2
        exit 1
    fi
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists once (bounded), then install.
    timeout 600 "${SUDO[@]}" apt-get update -q
    timeout 1200 "${SUDO[@]}" apt-get install -y -q "${missing[@]}"
else
    log "cmake, libcurl4-openssl-dev, zookeeper: already installed"
fi

# --- nisshi broker -------------------------------------------------------------------------
have_nisshi() {
    command -v nisshi >/dev/null 2>&1 || [ -x "$BIN_DIR/nisshi" ]
}
if have_nisshi; then
    log "nisshi: already installed ($(command -v nisshi || echo "$BIN_DIR/nisshi"))"
else
    cache="../shared/bin/nisshi-$NISSHI_VERSION.gz"
    mkdir -p "$BIN_DIR"
    if [ -f "$cache" ] && [ -f "$cache.sha256" ]; then
        log "nisshi: from $cache"
        want=$(awk '{print $1}' "$cache.sha256")
        got=$(sha256sum "$cache" | awk '{print $1}')
        if [ "$want" != "$got" ]; then
            log "nisshi: $cache has sha256 $got, expected $want: refusing it" >&2
            exit 1
        fi
        gunzip -c "$cache" >"$BIN_DIR/nisshi.partial"
        chmod +x "$BIN_DIR/nisshi.partial"
        mv "$BIN_DIR/nisshi.partial" "$BIN_DIR/nisshi"
    else
        log "nisshi: no cached binary; building it with cargo install (about 35 minutes on 2 cores)"
        cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version
    fi
fi
"$BIN_DIR/nisshi" --version 2>/dev/null | sed 's/^/== install-deps: /' || true
