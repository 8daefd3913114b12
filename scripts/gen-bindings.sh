#!/usr/bin/env bash
# Regenerates crates/cuda-types/src/generated/ from pinned NVIDIA headers taken
# from PyPI wheels. The output is committed, so builds need none of this;
# scripts/test.sh runs `--check` so the committed output cannot drift from
# what the pinned headers and tools generate.
#
#   scripts/gen-bindings.sh            # regenerate
#   scripts/gen-bindings.sh --check    # regenerate into a temp dir; diff, exit 1 on drift
#   scripts/gen-bindings.sh --deps     # only install the tools and headers (scripts/test-deps.sh)
#
# Needs libclang (Debian 12: apt-get install libclang-dev, which is clang 14;
# the committed output was generated with it), a Python with pip (the venv of
# scripts/test-deps.sh when there is one) and cargo. bindgen-cli is installed
# once, pinned, into $VGPU_CACHE/tools/ and the headers into $VGPU_CACHE/headers/;
# when both are there a run only invokes bindgen (a few seconds).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${VGPU_CACHE:-$ROOT/.cache}
HEADERS=$CACHE/headers
OUT=$ROOT/crates/cuda-types/src/generated
BINDGEN_VERSION=0.72.1
BINDGEN_ROOT=$CACHE/tools/bindgen-cli-$BINDGEN_VERSION
BINDGEN=$BINDGEN_ROOT/bin/bindgen

# The union of the CUDA 12.9 and 13.x driver APIs is exactly what the 13.5
# headers declare once their internal/legacy sections are switched on (checked
# when these pins were chosen: no 12.9 name is missing), so one header of each
# kind generates the types; the 12.9 typedef headers only add PFN entries.
WHEELS=(
  "nvidia-cuda-runtime==13.5.37"
  "nvidia-cuda-runtime-cu12==12.9.79"
  "nvidia-nvml-dev==13.5.37"
)

mode=generate
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --deps) mode=deps ;;
  *) echo "usage: $0 [--check|--deps]" >&2; exit 2 ;;
esac

log() { printf 'gen-bindings: %s\n' "$*" >&2; }

# The pinned bindgen, never whatever `bindgen` is on PATH: another version
# generates different code.
ensure_bindgen() {
  [[ -x $BINDGEN ]] && return
  log "installing bindgen-cli $BINDGEN_VERSION into $BINDGEN_ROOT"
  cargo install --quiet --locked --root "$BINDGEN_ROOT" bindgen-cli --version "$BINDGEN_VERSION"
}

# bindgen loads libclang at run time (clang-sys looks in LIBCLANG_PATH, then
# the LLVM directories); libclang-cpp, which other packages bring, is not it.
ensure_libclang() {
  if [[ -n ${LIBCLANG_PATH:-} ]] || compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null; then
    return
  fi
  log "libclang missing: apt-get install libclang-dev (scripts/test-deps.sh apt)"
  exit 1
}

# Each wheel unpacked once into $HEADERS/<name>-<version>; a directory there
# is complete (it is renamed into place only after the unpacking succeeded).
ensure_headers() {
  local py=python3 w name ver dir tmp
  [[ -x $CACHE/venv/bin/python ]] && py=$CACHE/venv/bin/python
  mkdir -p "$HEADERS"
  for w in "${WHEELS[@]}"; do
    name=${w%%==*}; ver=${w##*==}
    dir=$HEADERS/$name-$ver
    [[ -d $dir ]] && continue
    log "downloading $w"
    tmp=$(mktemp -d "$HEADERS/.tmp.XXXXXX")
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp/whl" "$w"
    "$py" -m zipfile -e "$tmp"/whl/*.whl "$tmp/tree"
    mv "$tmp/tree" "$dir"
    rm -rf "$tmp"
  done
}

ensure_libclang
ensure_bindgen
ensure_headers
[[ $mode == deps ]] && exit 0

# Where the pinned version of wheel $1 is unpacked.
unpacked() {
  local w
  for w in "${WHEELS[@]}"; do
    [[ ${w%%==*} == "$1" ]] && { echo "$HEADERS/$1-${w##*==}"; return; }
  done
  log "no pin for $1"; exit 1
}
C13=$(unpacked nvidia-cuda-runtime)/nvidia/cu13/include
C12=$(unpacked nvidia-cuda-runtime-cu12)/nvidia/cuda_runtime/include
N13=$(unpacked nvidia-nvml-dev)/nvidia/cu13/include

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest=$OUT
[[ $mode == check ]] && dest=$work/out
mkdir -p "$dest"

common=(--no-layout-tests --no-doc-comments --use-core --default-enum-style=newtype
        --with-derive-default --no-prepend-enum-name)

# Types (no functions): the shims define the functions themselves.
"$BINDGEN" "$C13/cuda.h" "${common[@]}" --ignore-functions \
  --allowlist-type 'CU.*|cu.*' --allowlist-var 'CU.*|cuda.*|CUDA.*' \
  -o "$work/cuda_types.rs" -- -I"$C13" -D__CUDA_API_VERSION_INTERNAL
"$BINDGEN" "$N13/nvml.h" "${common[@]}" --ignore-functions \
  --allowlist-type 'nvml.*' --allowlist-var 'NVML.*|nvml.*' \
  -o "$work/nvml_types.rs" -- -I"$N13" -DNVML_NO_UNVERSIONED_FUNC_DEFS
# Prototypes only, to build the function lists.
"$BINDGEN" "$C13/cuda.h" --no-layout-tests --allowlist-function 'cu.*' --blocklist-type '.*' \
  -o "$work/cuda_fns.rs" -- -I"$C13" -D__CUDA_API_VERSION_INTERNAL
"$BINDGEN" "$N13/nvml.h" --no-layout-tests --allowlist-function 'nvml.*' --blocklist-type '.*' \
  -o "$work/nvml_fns.rs" -- -I"$N13" -DNVML_NO_UNVERSIONED_FUNC_DEFS

# "name version, ..." for the generated files' header, from the one pin list.
pins=$(printf '%s\n' "${WHEELS[@]}" | sed 's/==/ /' | paste -sd, - | sed 's/,/, /g')
python3 "$ROOT/scripts/gen_function_lists.py" "$work" "$dest" "$C12" "$C13" "$pins"

if [[ $mode == check ]]; then
  if ! diff -ru "$OUT" "$dest"; then
    log "the committed output differs from what the pinned headers generate (diff above);"
    log "run scripts/gen-bindings.sh and commit, or fix the script"
    exit 1
  fi
  log "committed output is up to date"
fi
