#!/usr/bin/env bash
# Regenerates crates/cuda-types/src/generated/ from pinned NVIDIA headers taken
# from PyPI wheels. Dev-time only: needs bindgen-cli and libclang (Debian
# libclang-dev); the output is committed so builds need neither.
#
#   scripts/gen-bindings.sh            # regenerate
#   scripts/gen-bindings.sh --check    # regenerate into a temp dir and diff
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${VGPU_CACHE:-$ROOT/.cache}/headers
OUT=$ROOT/crates/cuda-types/src/generated
BINDGEN_VERSION=0.72.1

# The union of the CUDA 12.9 and 13.x driver APIs is exactly what the 13.5
# headers declare once their internal/legacy sections are switched on (checked
# when these pins were chosen: no 12.9 name is missing), so one header of each
# kind generates the types; the 12.9 typedef headers only add PFN entries.
WHEELS=(
  "nvidia-cuda-runtime==13.5.37"
  "nvidia-cuda-runtime-cu12==12.9.79"
  "nvidia-nvml-dev==13.5.37"
)

check=0
[[ "${1:-}" == "--check" ]] && check=1

if ! command -v bindgen >/dev/null; then
  echo "gen-bindings: installing bindgen-cli $BINDGEN_VERSION" >&2
  cargo install --locked bindgen-cli --version "$BINDGEN_VERSION"
fi
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
  echo "gen-bindings: libclang missing; apt-get install libclang-dev" >&2
  exit 1
fi

mkdir -p "$CACHE"
for w in "${WHEELS[@]}"; do
  name=${w%%==*}; ver=${w##*==}
  dir=$CACHE/$name-$ver
  [[ -d $dir ]] && continue
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$tmp" "$w"
  mkdir -p "$dir"
  python3 -m zipfile -e "$tmp"/*.whl "$dir"
  rm -rf "$tmp"
done

C13=$CACHE/nvidia-cuda-runtime-13.5.37/nvidia/cu13/include
C12=$CACHE/nvidia-cuda-runtime-cu12-12.9.79/nvidia/cuda_runtime/include
N13=$CACHE/nvidia-nvml-dev-13.5.37/nvidia/cu13/include

dest=$OUT
if (( check )); then dest=$(mktemp -d); fi
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

common=(--no-layout-tests --no-doc-comments --use-core --default-enum-style=newtype
        --with-derive-default --no-prepend-enum-name)

# Types (no functions): the shims define the functions themselves.
bindgen "$C13/cuda.h" "${common[@]}" --ignore-functions \
  --allowlist-type 'CU.*|cu.*' --allowlist-var 'CU.*|cuda.*|CUDA.*' \
  -o "$work/cuda_types.rs" -- -I"$C13" -D__CUDA_API_VERSION_INTERNAL 2>/dev/null
bindgen "$N13/nvml.h" "${common[@]}" --ignore-functions \
  --allowlist-type 'nvml.*' --allowlist-var 'NVML.*|nvml.*' \
  -o "$work/nvml_types.rs" -- -I"$N13" -DNVML_NO_UNVERSIONED_FUNC_DEFS 2>/dev/null
# Prototypes only, to build the function lists.
bindgen "$C13/cuda.h" --no-layout-tests --allowlist-function 'cu.*' --blocklist-type '.*' \
  -o "$work/cuda_fns.rs" -- -I"$C13" -D__CUDA_API_VERSION_INTERNAL 2>/dev/null
bindgen "$N13/nvml.h" --no-layout-tests --allowlist-function 'nvml.*' --blocklist-type '.*' \
  -o "$work/nvml_fns.rs" -- -I"$N13" -DNVML_NO_UNVERSIONED_FUNC_DEFS 2>/dev/null

python3 "$ROOT/scripts/gen_function_lists.py" "$work" "$dest" "$C12" "$C13"

if (( check )); then
  diff -ru "$OUT" "$dest" && echo "gen-bindings: committed output is up to date"
  rm -rf "$dest"
fi
