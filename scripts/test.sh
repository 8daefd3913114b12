#!/usr/bin/env bash
# The test command (README, .ci/run): the generated bindings match what the
# pinned headers generate, formatting and lints, then build every
# artifact the end-to-end tests start (the vgpu binary, the shims, the
# software GPU), then run all tests. Tests cannot build these themselves:
# cargo holds the target-dir lock while tests run.
#
#   scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/gen-bindings.sh --check
cargo fmt --all -- --check
cargo clippy --workspace --tests --locked -- -D warnings
cargo build --workspace --locked
cargo test --workspace --locked "$@"
