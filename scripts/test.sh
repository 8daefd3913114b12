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
# Host configurations real GPU hosts have, played by the software GPU
# (issue 13 item 7): a representative subset of the end-to-end tests — GPU
# discovery, a cudart client, kernels — again on a CUDA 12.2 (R535) host
# (where a CUDA 13 runtime must refuse the driver) and on a two-GPU host.
# About a minute more.
on_profile() {
    VGPU_TEST_PROFILE=$1 cargo test --locked -p vgpu \
        --test discovery --test cudart --test kernels -- \
        cgo_ gpu_discover identity_ mem_nvml preload_ \
        ptx_only_static nvrtc out_of_bounds cudart_12_9 "${@:2}"
}
on_profile h100-cuda12.2 cudart_13_5
on_profile 2x-h100
