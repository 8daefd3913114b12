#!/usr/bin/env bash
# Rebuilds the parameter-layout test images (tests/params.rs) from params.cu
# and big.cu.
# Made with nvcc 13.5 (V13.5.37) from the nvidia-cuda-nvcc wheel:
#   NVCC=$(find .cache -name nvcc -type f) bash crates/cuda-abi/tests/data/make.sh
set -euo pipefail
cd "$(dirname "$0")"
NVCC=${NVCC:-nvcc}
both='-gencode arch=compute_90,code=[sm_90,compute_90]'
"$NVCC" -cubin -arch=sm_90 -o params.sm_90.cubin params.cu
"$NVCC" -cubin -arch=sm_80 -o params.sm_80.cubin params.cu
"$NVCC" -ptx -arch=sm_80 -o params.sm_80.ptx params.cu
"$NVCC" -cubin -arch=sm_90 -o big.sm_90.cubin big.cu
"$NVCC" -ptx -arch=sm_90 -o big.sm_90.ptx big.cu
# sm_90 SASS and compute_90 PTX; nvcc 13 compresses the PTX (ZSTD) by default.
"$NVCC" -fatbin $both -o params.fatbin params.cu
# Everything ZSTD-compressed, with an sm_80 cubin besides.
"$NVCC" -fatbin $both -gencode arch=compute_80,code=sm_80 -Xfatbin -compress-all \
    -o params.zstd.fatbin params.cu
# Everything LZ4-compressed (the older toolkits' codec).
"$NVCC" -fatbin $both -Xfatbin -compress-all -Xfatbin -compress-mode=speed \
    -o params.lz4.fatbin params.cu
# PTX only, uncompressed.
"$NVCC" -fatbin --no-compress -gencode arch=compute_80,code=compute_80 \
    -o params.ptx_only.fatbin params.cu
