"""Kernels compiled by numba-cuda (@cuda.jit) and run on the vgpu device.

The venv ($VGPU_CACHE/venv-numba, scripts/test-deps.sh group `numba`) has no
nvJitLink, so numba emits PTX and cuda.core links it through the driver's
cuLink* API: the driver (here the software GPU) receives PTX, never SASS.
This script refuses to run if nvJitLink became loadable (it would hand the
driver an sm_90 cubin the software GPU cannot execute).

Each check prints `<name>=ok` or `<name>=MISMATCH ...`; exit 0 only when all
match (the Rust test is tests/python_clients.rs).
"""
import sys

import numpy as np
from numba import cuda
from numba.cuda.cudadrv import driver as numba_driver


@cuda.jit
def vector_add(a, b, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] + b[i]


@cuda.jit
def sum_atomic(values, total):
    i = cuda.grid(1)
    if i < values.size:
        cuda.atomic.add(total, 0, values[i])


@cuda.jit
def block_reduce(values, partial):
    # Shared-memory tree reduction per block, then one atomic per block.
    buf = cuda.shared.array(256, dtype=np.float32)
    tid = cuda.threadIdx.x
    i = cuda.grid(1)
    buf[tid] = values[i] if i < values.size else 0.0
    cuda.syncthreads()
    step = 128
    while step > 0:
        if tid < step:
            buf[tid] += buf[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        cuda.atomic.add(partial, 0, buf[0])


def report(name, ok, detail=""):
    print(f"{name}={'ok' if ok else 'MISMATCH ' + detail}", flush=True)
    return ok


def main():
    if numba_driver._have_nvjitlink():
        print("nvJitLink is loadable: numba would link to SASS; "
              "remove nvidia-nvjitlink-cu12 from the venv", flush=True)
        return 2
    print("linker=driver-culink", flush=True)
    ok = True

    n = 100_003  # not a multiple of the block size
    a = np.arange(n, dtype=np.float32)
    b = (np.arange(n, dtype=np.float32) * 0.5) + 1.0
    d_a = cuda.to_device(a)
    d_b = cuda.to_device(b)
    d_out = cuda.device_array_like(a)
    threads = 256
    blocks = (n + threads - 1) // threads
    vector_add[blocks, threads](d_a, d_b, d_out)
    out = d_out.copy_to_host()
    bad = np.nonzero(out != a + b)[0]
    ok &= report("vector_add", bad.size == 0,
                 f"{bad.size} wrong, first at {bad[:1]}: {out[bad[:1]]} != {(a + b)[bad[:1]]}")

    ints = (np.arange(n, dtype=np.int64) % 1000).astype(np.int32)
    d_total = cuda.to_device(np.zeros(1, dtype=np.int32))
    sum_atomic[blocks, threads](cuda.to_device(ints), d_total)
    total = int(d_total.copy_to_host()[0])
    want = int(ints.sum(dtype=np.int64))
    ok &= report("atomic_sum", total == want, f"{total} != {want}")

    vals = np.ones(n, dtype=np.float32) * 0.25
    d_partial = cuda.to_device(np.zeros(1, dtype=np.float32))
    block_reduce[blocks, threads](cuda.to_device(vals), d_partial)
    got = float(d_partial.copy_to_host()[0])
    want_f = float(vals.sum(dtype=np.float64))
    ok &= report("block_reduce", abs(got - want_f) <= 1e-3 * want_f, f"{got} != {want_f}")

    cuda.synchronize()
    print(f"all={'ok' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
