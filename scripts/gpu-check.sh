#!/usr/bin/env bash
# On a machine WITH an NVIDIA GPU and driver: the same guest programs the
# test suite runs on the software GPU, now against `vgpu host --driver auto`
# (which must pick the real driver), plus native-vs-remote figures.
#
#   scripts/gpu-check.sh            # after scripts/test-deps.sh
#
# Prints one "PASS/FAIL <check>" line per check and a figures table; exits
# non-zero if any check failed. Never changes the GPU's settings.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${VGPU_CACHE:-$ROOT/.cache}
cargo build --workspace --release --locked >/dev/null || exit 1
BIN=$ROOT/target/release
work=$(mktemp -d)
sock=$work/vgpu.sock
failed=0
check() { # name, command...
    local name=$1; shift
    if "$@" >"$work/$name.out" 2>&1; then echo "PASS $name"; else echo "FAIL $name (see below)"; sed 's/^/    /' "$work/$name.out" | tail -n 20; failed=1; fi
}

if ! ldconfig -p | grep -q 'libcuda.so.1 '; then
    echo "no NVIDIA libcuda.so.1 on this machine: nothing to check"; exit 2
fi
nvidia-smi -L 2>/dev/null || true

"$BIN/vgpu" host --listen "unix:$sock" --driver auto >"$work/host.log" 2>&1 &
host=$!
trap 'kill $host 2>/dev/null; wait $host 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 200); do grep -q "listening on" "$work/host.log" && break; sleep 0.1; done
head -n 1 "$work/host.log"
check driver-is-nvidia grep -q "driver: nvidia" "$work/host.log"
export VGPU_HOST=unix:$sock

# The guest side: shims through `vgpu run` (library path + preload).
run() { "$BIN/vgpu" run -- "$@"; }
cc_() { gcc -std=gnu11 -O1 -Wall -Wextra -Werror -o "$work/$1" "tests/c/$1.c" "${@:2}" -ldl -lpthread; }
cc_ ollama_cgo_0123 && check ollama-cgo run "$work/ollama_cgo_0123"
cc_ ollama_gpu_discover_030 && check ollama-030 run "$work/ollama_gpu_discover_030"
cc_ ollama_mem_nvml && check ollama-mem-nvml run "$work/ollama_mem_nvml"
cc_ device_identity && check identity run "$work/device_identity"
check doctor run "$BIN/vgpu" doctor
check smi "$BIN/vgpu" smi
if [ -x "$CACHE/venv/bin/nvitop" ]; then check nvitop run "$CACHE/venv/bin/nvitop" --once; fi

# Unmodified libcudart of every pinned version: discovery, memory, a kernel.
CRT=$(ls -d "$CACHE"/venv/lib/python3*/site-packages/nvidia/cu13/include 2>/dev/null | head -n1)
for v in 11.8.89 12.4.127 12.9.79 13.0.96 13.5.37; do
    d=$CACHE/cudart/$v/nvidia/cuda_runtime; [ -d "$d" ] || d=$CACHE/cudart/$v/nvidia/cu13
    lib=$(ls "$d"/lib/libcudart.so.1* 2>/dev/null | head -n1) || true
    [ -n "$lib" ] || { echo "SKIP cudart-$v (scripts/test-deps.sh cudart)"; continue; }
    gcc -std=gnu11 -O1 -I"$d/include" -idirafter "$CRT" tests/c/cudart_client.c -o "$work/cudart-$v" \
        "$lib" -Wl,-rpath,"$(dirname "$lib")" -lpthread && check "cudart-$v" run "$work/cudart-$v"
done

# nvcc-built kernels: SASS for the real GPU, PTX for JIT.
NV=$(dirname "$CRT")
if [ -x "$NV/bin/nvcc" ]; then
    PATH=$NV/bin:$PATH "$NV/bin/nvcc" -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
        -o "$work/kernels" tests/cuda/kernels.cu -Xlinker -rpath,"$NV/lib" && check kernels run "$work/kernels"
    # Native vs remote: the same binary straight on the real driver, then through vgpu.
    t0=$(date +%s.%N); "$work/kernels" >/dev/null 2>&1; t1=$(date +%s.%N)
    run "$work/kernels" >/dev/null 2>&1; t2=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v c="$t2" \
        'BEGIN { printf "figure kernels.cu wall time: native %.3f s, through vgpu %.3f s\n", b - a, c - b }'
fi
echo "figures (vgpu bench):"
"$BIN/vgpu" bench --round-trips 20000 --launches 20000 | sed 's/^/    /'
exit $failed
