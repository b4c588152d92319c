#!/usr/bin/env bash
# The test suite: every tier that needs no external service, plus (when present) the ones
# that do. This is the README's test command and what .ci/run calls.
#
#   scripts/test.sh            # all tests of the workspace
#   scripts/test.sh -p sluice-engine   # extra arguments go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --locked "$@"
