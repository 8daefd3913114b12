#!/bin/sh
# Regenerates the committed PTX fixtures from kernels.cu. Needs nvcc from the
# PyPI wheel nvidia-cuda-nvcc (13.x), e.g.:
#   python3 -m venv .cache/nvcc-venv && .cache/nvcc-venv/bin/pip install nvidia-cuda-nvcc==13.5.37
#   NVCC=.cache/nvcc-venv/lib/python3.11/site-packages/nvidia/cu13/bin/nvcc crates/vgpu-ptx/tests/cuda/regen.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
NVCC=${NVCC:-nvcc}
"$NVCC" -arch=sm_80 -ptx -o "$here/kernels_sm80.ptx" "$here/kernels.cu"
# A fatbin with an sm_80 cubin and ZSTD-compressed compute_90 PTX.
"$NVCC" -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=compute_90 \
    -fatbin -o "$here/kernels.fatbin" "$here/kernels.cu"
