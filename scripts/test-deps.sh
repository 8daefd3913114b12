#!/usr/bin/env bash
# Installs what the end-to-end tests need on a fresh Debian 12 machine.
#
#   scripts/test-deps.sh            # every group
#   scripts/test-deps.sh apt nvml   # only these groups
#
# Idempotent: apt packages are installed only when dpkg says they are missing,
# and each pinned Python group is installed once into the venv and recorded in a
# stamp file (re-installed only when its pin list or the Python changes).
#
# Environment:
#   VGPU_CACHE   cache dir (default <repo>/.cache); the venv is $VGPU_CACHE/venv
#   PYTHON       interpreter used to create the venv (default python3)
#
# Adding a group: write `group_<name>()` (usually a one-line `pip_group` call
# with exact `==` pins) and add <name> to ALL_GROUPS.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${VGPU_CACHE:-$REPO/.cache}"
VENV="$CACHE/venv"
PYTHON="${PYTHON:-python3}"

ALL_GROUPS=(apt bindings nvml cudart nvcc numba numba_suite llama cupy ggml)
# Opt-in, not in ALL_GROUPS (5.3 GB): torch (tests/torch.rs, an #[ignore]d test).

log() { printf 'test-deps: %s\n' "$*"; }

# ---------------------------------------------------------------- apt
APT_PACKAGES=(
    gcc          # C harness in tests/c
    libc6-dev    # headers for the C harness (dlfcn.h, ...)
    binutils     # nm, readelf (tests/exports.rs, crates/vgpu-guest/tests/vfiles.rs)
    python3      # venv for the NVML clients
    python3-venv # ensurepip for Debian's python3
    libclang-dev # bindgen's libclang (scripts/gen-bindings.sh --check in scripts/test.sh)
)

group_apt() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "apt: all present (${APT_PACKAGES[*]})"
        return
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { log "apt: missing ${missing[*]} and not root (no sudo)"; exit 1; }
        sudo=(sudo)
    fi
    log "apt: installing ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------- python venv
ensure_venv() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pip' 2>/dev/null; then
        return
    fi
    log "venv: creating $VENV with $("$PYTHON" --version 2>&1)"
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
}

# pip_group NAME SPEC... : install exact pins SPEC into the venv unless the
# stamp for NAME already records the same pins and interpreter.
pip_group() {
    local name="$1"; shift
    local spec
    for spec in "$@"; do
        case "$spec" in
            *==*) ;;
            *) log "group $name: '$spec' is not pinned with =="; exit 1 ;;
        esac
    done
    ensure_venv
    local stamp="$VENV/.stamp-$name"
    local want
    want="$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])') $*"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "$name: up to date ($*)"
        return
    fi
    log "$name: installing $*"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"
    printf '%s' "$want" > "$stamp"
    log "$name: installed"
}

# What `scripts/gen-bindings.sh --check` (run by scripts/test.sh) needs besides
# libclang: the pinned bindgen-cli (built once into $VGPU_CACHE/tools/) and the
# pinned NVIDIA headers ($VGPU_CACHE/headers/). The script owns those pins and
# skips what is already there.
group_bindings() {
    ensure_venv
    VGPU_CACHE="$CACHE" "$REPO/scripts/gen-bindings.sh" --deps
    log "bindings: bindgen-cli and headers present"
}

# NVML clients (docs/clients.md "NVML clients"). All three pins were checked
# to exist on PyPI with `pip index versions`.
group_nvml() {
    pip_group nvml nvidia-ml-py==13.615.71 nvitop==1.7.2 gpustat==1.1.1
}

# pip_target NAME DIR SPEC... : like pip_group, but into its own directory
# (several versions of one wheel cannot share a venv).
pip_target() {
    local name="$1" dir="$2"; shift 2
    ensure_venv
    local stamp="$dir/.stamp"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$*" ]; then
        log "$name: up to date ($*)"
        return
    fi
    log "$name: installing $* into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --target "$dir" "$@"
    printf '%s' "$*" > "$stamp"
}

# Unmodified libcudart of every runtime the shims must satisfy
# (docs/clients.md "libcudart releases"): $VGPU_CACHE/cudart/<version>/nvidia/...
group_cudart() {
    local spec ver
    for spec in nvidia-cuda-runtime-cu11==11.8.89 nvidia-cuda-runtime-cu12==12.4.127 \
                nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-runtime==13.0.96 \
                nvidia-cuda-runtime==13.5.37; do
        ver=${spec##*==}
        pip_target "cudart $ver" "$CACHE/cudart/$ver" "$spec"
    done
}

# The CUDA 13 compiler driver (nvcc, cicc, ptxas, fatbinary; docs/clients.md "nvcc and NVRTC")
# and NVRTC 12/13, for test programs built at test time.
group_nvcc() {
    pip_group nvcc nvidia-cuda-nvcc==13.5.37 nvidia-cuda-nvrtc==13.5.37 nvidia-cuda-nvrtc-cu12==12.9.86
    local nv
    nv="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
    # `-cudart shared` links against libcudart.so, which the wheel lacks.
    [ -e "$nv/lib/libcudart.so" ] || ln -s libcudart.so.13 "$nv/lib/libcudart.so"
    log "nvcc: $("$nv/bin/nvcc" --version | tail -n 1)"
}

# numba-cuda and cuda-bindings (docs/clients.md "Python CUDA clients", tests/python_clients.rs) in
# their own venv, $VGPU_CACHE/venv-numba, so the NVML venv stays small.
# These are the versions `pip install 'numba-cuda[cu12]==0.30.4'` resolves,
# pinned one by one, MINUS nvidia-nvjitlink-cu12: numba-cuda 0.30.4 reads no
# switch for it (NUMBA_CUDA_ENABLE_PYNVJITLINK is gone); whenever cuda-bindings
# can load libnvJitLink, numba compiles kernels to LTO-IR and cuda.core links
# them in-process to a SASS-only cubin, which the software GPU cannot run.
# Without the library, numba emits PTX and cuda.core links through the
# driver's cuLink* API (cuda/core/_linker: _decide_nvjitlink_or_driver).
NUMBA_PINS=(
    numba-cuda==0.30.4 numba==0.68.1 llvmlite==0.50.0 numpy==2.4.6
    cuda-bindings==12.9.10 cuda-core==1.2.2 cuda-pathfinder==1.9.1 packaging==26.4
    "cuda-toolkit[cccl,cudart,nvcc,nvrtc]==12.9.2.0"
    nvidia-cuda-cccl-cu12==12.9.27 nvidia-cuda-nvcc-cu12==12.9.86
    nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79
)
group_numba() {
    local VENV="$CACHE/venv-numba"
    pip_group numba "${NUMBA_PINS[@]}"
    local jl
    for jl in "$VENV"/lib/python*/site-packages/nvidia/nvjitlink; do
        if [ -e "$jl" ]; then
            log "numba: removing nvidia-nvjitlink-cu12 (kernels must reach the driver as PTX)"
            "$VENV/bin/python" -m pip uninstall -y -q --disable-pip-version-check nvidia-nvjitlink-cu12
        fi
    done
}

# torch 2.15.0 (+cu132, the PyPI default build; 2.8 GB download, 5.3 GB on
# disk) in $VGPU_CACHE/venv-torch. Opt-in: tests/torch.rs is #[ignore]d and
# needs this group first (`scripts/test-deps.sh torch`, then
# `cargo test --test torch -- --ignored`).
group_torch() {
    local VENV="$CACHE/venv-torch"
    pip_group torch torch==2.15.0 numpy==2.4.6
}

# llama.cpp's prebuilt CUDA build (tests/llama.rs): the cyllama-cuda12 wheel
# (llama.cpp b9190, ggml 0.12.0, kernels for sm_75 with compute_75 PTX; an
# 88 MB download, 235 MB installed), the CUDA 12 runtime and cuBLAS its
# libggml-cuda links (cuBLAS is most of the 1.2 GB venv), and gguf + numpy
# for scripts/tiny-gguf.py, every pin of `pip install` of the first five,
# in $VGPU_CACHE/venv-llama. Then the tiny test models into
# $VGPU_CACHE/llama-models, rewritten only when tiny-gguf.py, the runner it
# uses or the pins change.
LLAMA_PINS=(
    cyllama-cuda12==0.2.18 gguf==0.19.0 numpy==2.4.6
    nvidia-cuda-runtime-cu12==12.9.79 nvidia-cublas-cu12==12.9.1.4
    pyyaml==6.0.4 requests==2.34.2 tqdm==4.70.1 certifi==2026.10.19.post1
    charset-normalizer==3.5.3 idna==3.21 urllib3==2.8.0
)
group_llama() {
    local VENV="$CACHE/venv-llama"
    pip_group llama "${LLAMA_PINS[@]}"
    local out="$CACHE/llama-models" want
    want="$(cat "$REPO/scripts/tiny-gguf.py" "$REPO/tests/py/llama_generate.py" | sha256sum | cut -d' ' -f1) ${LLAMA_PINS[*]}"
    if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ]; then
        log "llama: models up to date in $out"
        return
    fi
    log "llama: writing the tiny models into $out"
    rm -rf "$out.tmp"
    PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" "$REPO/scripts/tiny-gguf.py" "$out.tmp" 2>"$CACHE/llama-models.log" || {
        tail -n 20 "$CACHE/llama-models.log"
        log "llama: scripts/tiny-gguf.py failed (whole log: $CACHE/llama-models.log)"
        exit 1
    }
    grep '^tiny-gguf:' "$CACHE/llama-models.log" || true
    rm -rf "$out"
    mv "$out.tmp" "$out"
    printf '%s' "$want" > "$out/.stamp"
}

# numba-cuda's own test suite (scripts/numba-suite.sh, tests/numba_suite.rs)
# in the numba venv: pytest with pytest-timeout (one hung kernel must not stall
# the run), and the packages of numba-cuda's `test` dependency group that the
# wheel's tests import (filecheck is imported by numba.cuda.testing itself;
# ml_dtypes, cffi and psutil by single test files; pytest-benchmark gives
# tests/benchmarks its fixture). Transitive dependencies pinned one by one, as
# pip resolved them.
NUMBA_SUITE_PINS=(
    pytest==9.2.0 pytest-timeout==2.4.0 pluggy==1.7.0 iniconfig==2.3.1 Pygments==2.21.0
    filecheck==1.0.6 ml-dtypes==0.6.0 psutil==7.2.2 cffi==2.1.1 pycparser==3.12
    pytest-benchmark==5.3.1 py-cpuinfo2==10.1.1
)
group_numba_suite() {
    local VENV="$CACHE/venv-numba"
    [ -x "$VENV/bin/python" ] || group_numba
    pip_group numba_suite "${NUMBA_SUITE_PINS[@]}"
}

# CuPy for CUDA 12 (tests/cupy.rs, tests/py/cupy_checks.py) in
# $VGPU_CACHE/venv-cupy: the cupy-cuda12x wheel (136 MB download, 286 MB
# installed; its CUDA runtime is linked in statically, libcuda is dlopened),
# NVRTC 12.9 (CuPy compiles every kernel at run time; 217 MB), the CUDA
# runtime wheel for its headers only (CuPy passes its include/ to NVRTC,
# found by cuda-pathfinder), cuBLAS (matmul: CuPy loads it even for integer
# matmul; 817 MB installed, the same wheel as group llama, so pip's cache
# downloads it once), cuRAND (cupy.random's legacy API; 162 MB) and the
# pins of CuPy's `test` extra for its own suite; 1.7 GB in all. Every pin
# is what `pip install` of the first seven resolved.
CUPY_PINS=(
    cupy-cuda12x==14.2.0 numpy==2.4.6 cuda-pathfinder==1.9.1
    nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79
    nvidia-cublas-cu12==12.9.1.4 nvidia-curand-cu12==10.3.10.19
    pytest==9.2.0 hypothesis==6.54.6 mpmath==1.4.1 packaging==26.4
    iniconfig==2.3.1 pluggy==1.7.0 pygments==2.21.0 sortedcontainers==2.4.0
    attrs==26.1.0
)
# sha256 of the sdist cupy-<version of cupy-cuda12x>.tar.gz (4.1 MB): the
# wheel lacks CuPy's tests, the sdist has them (tests/ and, for pytest,
# pyproject.toml). A version bump fails here until this is updated.
CUPY_SDIST_SHA256=cfed725e612178cfbdbf62f4a3a598b60edecbbca718c0d4580c21a16ae4a62c
group_cupy() {
    local VENV="$CACHE/venv-cupy"
    pip_group cupy "${CUPY_PINS[@]}"
    local ver="${CUPY_PINS[0]##*==}"
    local out="$CACHE/cupy-tests" want="cupy==$ver --hash=sha256:$CUPY_SDIST_SHA256"
    if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ]; then
        log "cupy: CuPy $ver's own tests up to date in $out"
        return
    fi
    log "cupy: fetching CuPy $ver's own tests (its sdist) into $out"
    local tmp="$CACHE/cupy-sdist.tmp" src
    rm -rf "$tmp"
    mkdir -p "$tmp"
    printf '%s\n' "$want" > "$tmp/requirements.txt"
    # pip checks the hash, unpacks the sdist, then fails to prepare its
    # metadata (building CuPy needs a CUDA toolkit); --no-clean keeps the
    # unpacked tree in our private TMPDIR.
    TMPDIR="$tmp" "$VENV/bin/python" -m pip download --disable-pip-version-check \
        --no-deps --no-binary :all: --no-build-isolation --no-clean --require-hashes \
        -r "$tmp/requirements.txt" -d "$tmp/download" > "$tmp/pip.log" 2>&1 || true
    src="$(find "$tmp" -mindepth 2 -maxdepth 2 -type d -name 'cupy_*' | head -n 1)"
    if [ -z "$src" ] || [ ! -f "$src/tests/conftest.py" ] || [ ! -f "$src/pyproject.toml" ]; then
        tail -n 20 "$tmp/pip.log"
        log "cupy: no unpacked CuPy $ver sdist with tests/ under $tmp (pip's log above)"
        exit 1
    fi
    rm -rf "$out"
    mkdir -p "$out"
    cp -r "$src/tests" "$src/pyproject.toml" "$out/"
    printf '%s' "$want" > "$out/.stamp"
    rm -rf "$tmp"
    log "cupy: $(find "$out/tests" -name 'test_*.py' | wc -l) test files in $out/tests"
}

# ggml's CUDA sources (tests/ggml_kernels.rs builds a few of its kernel files
# for compute_90 PTX, as Ollama does): the llama-cpp-python sdist vendors
# llama.cpp (ggml 0.25.3 in 0.3.36; a 77 MB download), of which ggml's
# headers, base library sources and ggml-cuda/ (about 6 MB) and llama.cpp's
# MIT licence are kept in $VGPU_CACHE/ggml/<version>/ (never committed). And
# the CCCL headers nvcc 13's cuda_fp16.h includes (<nv/target>): the
# nvidia-cuda-cccl that cuda-toolkit==13.5.0 pins, into the venv of group
# nvcc, where that nvcc finds them (include/cccl).
GGML_SDIST=llama-cpp-python==0.3.36
GGML_SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# What is kept of vendor/llama.cpp/ggml besides src/'s own files
# (ggml-quants.c includes the CPU backend's ggml-cpu-impl.h).
GGML_KEEP=(include src/ggml-cuda src/ggml-cpu/ggml-cpu-impl.h)
group_ggml() {
    group_nvcc
    pip_group ggml_cccl nvidia-cuda-cccl==13.3.5.0.6
    local ver="${GGML_SDIST##*==}"
    local out="$CACHE/ggml/$ver" req="$GGML_SDIST --hash=sha256:$GGML_SDIST_SHA256" keep
    local want="$req ${GGML_KEEP[*]}"
    if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ]; then
        log "ggml: sources of llama-cpp-python $ver up to date in $out"
        return
    fi
    log "ggml: fetching llama-cpp-python $ver's sdist for ggml's sources into $out"
    local tmp="$CACHE/ggml-sdist.tmp" src
    rm -rf "$tmp"
    mkdir -p "$tmp"
    printf '%s\n' "$req" > "$tmp/requirements.txt"
    # As for CuPy's tests: pip checks the hash and unpacks the sdist, then
    # fails to prepare its metadata (it builds with scikit-build-core);
    # --no-clean keeps the unpacked tree in our private TMPDIR.
    TMPDIR="$tmp" "$VENV/bin/python" -m pip download --disable-pip-version-check \
        --no-deps --no-binary :all: --no-build-isolation --no-clean --require-hashes \
        -r "$tmp/requirements.txt" -d "$tmp/download" > "$tmp/pip.log" 2>&1 || true
    src="$(find "$tmp" -mindepth 2 -maxdepth 2 -type d -name 'llama-cpp-python_*' | head -n 1)"
    src="$src/vendor/llama.cpp"
    if [ ! -f "$src/ggml/src/ggml-cuda/common.cuh" ] || [ ! -f "$src/LICENSE" ]; then
        tail -n 20 "$tmp/pip.log"
        log "ggml: no unpacked llama-cpp-python $ver sdist with ggml-cuda under $tmp (pip's log above)"
        exit 1
    fi
    rm -rf "$out"
    mkdir -p "$out/ggml/src"
    cp "$src/LICENSE" "$out/"
    for keep in "${GGML_KEEP[@]}"; do
        mkdir -p "$(dirname "$out/ggml/$keep")"
        cp -r "$src/ggml/$keep" "$out/ggml/$keep"
    done
    find "$src/ggml/src" -maxdepth 1 -type f -exec cp {} "$out/ggml/src/" \;
    printf '%s' "$want" > "$out/.stamp"
    rm -rf "$tmp"
    log "ggml: $(find "$out/ggml/src/ggml-cuda" -name '*.cu' | wc -l) CUDA files in $out/ggml/src/ggml-cuda"
}

# ---------------------------------------------------------------- main
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=("${ALL_GROUPS[@]}")
for g in "${groups[@]}"; do
    if ! declare -F "group_$g" >/dev/null; then
        log "unknown group '$g' (known: ${ALL_GROUPS[*]})"
        exit 2
    fi
    "group_$g"
done
log "done; venv: $VENV"
