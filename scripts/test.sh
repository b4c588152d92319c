#!/usr/bin/env bash
# The test suite: every tier that needs no external service, plus the Kafka and ZooKeeper
# tiers against real servers on loopback. This is the README's test command and what .ci/run
# calls.
#
#   scripts/test.sh                      # all tests of the workspace
#   scripts/test.sh -p sluice-engine     # extra arguments go to cargo test
#
# Services: when SLUICE_KAFKA_BROKERS / SLUICE_ZOOKEEPER are not set and the tools are
# installed (scripts/install-deps.sh), a private ZooKeeper and nisshi broker are started
# (scripts/services.sh) for the run and stopped at the end. Without the tools the tests that
# need them print SKIPPED, except in CI (CI=true), where SLUICE_REQUIRE=kafka,zookeeper makes
# them fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CI:-}" = true ] && [ -z "${SLUICE_REQUIRE:-}" ]; then
    export SLUICE_REQUIRE=kafka,zookeeper
fi

have_tools() {
    { command -v nisshi >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/nisshi" ]; } &&
        command -v java >/dev/null 2>&1 && [ -f /usr/share/java/zookeeper.jar ]
}

if [ -z "${SLUICE_KAFKA_BROKERS:-}" ] || [ -z "${SLUICE_ZOOKEEPER:-}" ]; then
    if have_tools; then
        # A services directory of this run's own, so parallel runs do not share one.
        SLUICE_SERVICES_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sluice-services.XXXXXX")"
        export SLUICE_SERVICES_DIR
        stop_services() {
            scripts/services.sh stop || true
            rm -rf "$SLUICE_SERVICES_DIR"
        }
        trap stop_services EXIT
        trap 'exit 130' INT TERM
        if [ -z "${SLUICE_KAFKA_BROKERS:-}" ] && [ -z "${SLUICE_ZOOKEEPER:-}" ]; then
            what=all
        elif [ -z "${SLUICE_KAFKA_BROKERS:-}" ]; then
            what=kafka
        else
            what=zookeeper
        fi
        eval "$(scripts/services.sh start "$what")"
        echo "test.sh: services: SLUICE_KAFKA_BROKERS=${SLUICE_KAFKA_BROKERS:-} SLUICE_ZOOKEEPER=${SLUICE_ZOOKEEPER:-}"
    else
        echo "test.sh: nisshi/ZooKeeper not installed (scripts/install-deps.sh): Kafka and ZooKeeper tests will skip"
    fi
fi

# `-p`/`--package` selects packages; otherwise the whole workspace.
scope=(--workspace)
for a in "$@"; do
    case "$a" in -p|--package|--package=*|-p?*) scope=() ;; esac
done
cargo test "${scope[@]}" --locked "$@"
