"""CuPy (the pinned cupy-cuda12x wheel) on the vgpu device, every result
checked against NumPy on the CPU.

    python cupy_checks.py [CHECK...]      # no names: every check in CHECKS

What runs where: CuPy's kernels (creation, elementwise, its own reductions,
ElementwiseKernel/ReductionKernel/RawKernel/RawModule, fusion) are CUDA C++
that CuPy compiles at run time with NVRTC and loads with the driver's
cuModuleLoadData; full-array reductions go to CUB kernels precompiled into
the wheel's cupy/cuda/cub.so, cupy.sort to Thrust's in cupy/cuda/thrust.so
(fatbins of sm_50..sm_120 SASS and compute_100 PTX, which the CUDA runtime
linked statically into those modules hands to cuLibraryLoadData; the
software GPU interprets the compute_100 PTX). The software GPU runs PTX only, so
the guest must set CUPY_COMPILE_WITH_PTX=1: without it CuPy asks NVRTC
for `-arch=sm_90` (a cubin, SASS) whenever NVRTC knows the device's
architecture, and cuModuleLoadData answers CUDA_ERROR_NO_BINARY_FOR_GPU.
The `compile_mode` check asserts that CuPy really asks NVRTC for PTX.

Output: one `<check>=ok` or `<check>=FAIL <reason>` line per check, some
`<check>.<what>=<value>` detail lines (timings in seconds, sizes), and
`summary passed=N failed=M` last. Exit status 0 only when every requested
check passed, 1 when one failed, 2 for an unknown check name.
The Rust side is tests/cupy.rs.
"""
import os
import sys
import threading
import time
import traceback

import numpy as np

T0 = time.perf_counter()
import cupy as cp  # noqa: E402  (timed)
import cupy._core._accelerator as accel  # noqa: E402
from cupy.cuda import compiler  # noqa: E402

IMPORT_S = time.perf_counter() - T0


class Mismatch(Exception):
    pass


# VGPU_CUPY_TRACE=1: print the time since the previous comparison with
# every comparison (to find what is slow on the software GPU).
TRACE = os.environ.get("VGPU_CUPY_TRACE") == "1"
_last = [time.perf_counter()]


def trace(name):
    if TRACE:
        now = time.perf_counter()
        print(f"  trace {now - _last[0]:7.3f}s {name}", flush=True)
        _last[0] = now


def same(name, got, want):
    """Exact equality of a CuPy result with NumPy's, dtype and shape included."""
    got = cp.asnumpy(got)
    trace(name)
    want = np.asarray(want)
    if got.dtype != want.dtype or got.shape != want.shape:
        raise Mismatch(f"{name}: {got.dtype}{got.shape} != {want.dtype}{want.shape}")
    if not np.array_equal(got, want, equal_nan=got.dtype.kind in "fc"):
        bad = np.flatnonzero(got.ravel() != want.ravel())[:3]
        raise Mismatch(
            f"{name}: differs at {bad.tolist()}: "
            f"{got.ravel()[bad].tolist()} != {want.ravel()[bad].tolist()}")


def close(name, got, want, rtol, atol=0.0):
    """Floating results: the GPU's libdevice and reduction order differ from
    NumPy's by rounding only."""
    got = cp.asnumpy(got)
    trace(name)
    want = np.asarray(want)
    if got.dtype != want.dtype or got.shape != want.shape:
        raise Mismatch(f"{name}: {got.dtype}{got.shape} != {want.dtype}{want.shape}")
    if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        i = int(np.nanargmax(err.ravel())) if err.size else 0
        raise Mismatch(
            f"{name}: max |diff| {float(err.ravel()[i]):.3g} at {i}: "
            f"{got.ravel()[i]!r} != {want.ravel()[i]!r} (rtol {rtol})")


def expect(name, cond, detail=""):
    if not cond:
        raise Mismatch(f"{name}: {detail}")


def detail(check, key, value):
    print(f"{check}.{key}={value}", flush=True)


RNG = np.random.default_rng(20240615)


# ---------------------------------------------------------------- checks

def check_device():
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode()
    cc = cp.cuda.Device(0).compute_capability
    free, total = cp.cuda.runtime.memGetInfo()
    detail("device", "name", name)
    detail("device", "cc", cc)
    detail("device", "total_mem", total)
    detail("device", "runtime_version", cp.cuda.runtime.runtimeGetVersion())
    detail("device", "driver_version", cp.cuda.runtime.driverGetVersion())
    expect("count", cp.cuda.runtime.getDeviceCount() == 1)
    expect("totalGlobalMem", props["totalGlobalMem"] == total, f"{props['totalGlobalMem']} vs {total}")
    expect("free", 0 < free <= total, f"{free} of {total}")
    expect("cc", cc == f"{props['major']}{props['minor']}", cc)


def check_compile_mode():
    opt, kind = compiler._get_arch_for_options_for_nvrtc()
    detail("compile_mode", "nvrtc_arch", opt)
    detail("compile_mode", "code_type", kind)
    detail("compile_mode", "nvrtc_version", ".".join(map(str, compiler._get_nvrtc_version())))
    expect("code_type", kind == "ptx",
           f"CuPy asks NVRTC for {kind} ({opt}); set CUPY_COMPILE_WITH_PTX=1")
    expect("arch", opt == f"-arch=compute_{cp.cuda.Device(0).compute_capability}", opt)


def check_creation():
    for dt in (np.bool_, np.int32, np.float64, np.complex64):
        n = np.dtype(dt).name
        same(f"zeros {n}", cp.zeros((3, 5), dtype=dt), np.zeros((3, 5), dtype=dt))
        same(f"ones {n}", cp.ones(17, dtype=dt), np.ones(17, dtype=dt))
        same(f"eye {n}", cp.eye(4, 5, k=1, dtype=dt), np.eye(4, 5, k=1, dtype=dt))
    host = RNG.standard_normal((37, 41)).astype(np.float32)
    same("asarray", cp.asarray(host), host)
    same("asarray(F)", cp.asarray(np.asfortranarray(host)), host)
    same("arange int64", cp.arange(-5, 1000, 7), np.arange(-5, 1000, 7))
    close("linspace", cp.linspace(-1, 3, 1001), np.linspace(-1, 3, 1001), rtol=1e-15, atol=1e-15)
    e = cp.empty((4, 4), dtype=np.int16)
    e.fill(-7)
    same("empty+fill", e, np.full((4, 4), -7, np.int16))
    d = cp.asarray(host)
    same("copy(F)", d.copy(order="F"), host)
    same("transpose", cp.ascontiguousarray(d.T), np.ascontiguousarray(host.T))
    same("slice", d[3:30:4, ::-2], host[3:30:4, ::-2])
    same("astype", d.astype(np.int32), host.astype(np.int32))
    same("concatenate", cp.concatenate([d, d[:5]]), np.concatenate([host, host[:5]]))


def check_elementwise():
    a = RNG.integers(-1000, 1000, size=(64, 33)).astype(np.int32)
    b = RNG.integers(1, 50, size=(64, 33)).astype(np.int32)
    da, db = cp.asarray(a), cp.asarray(b)
    same("add", da + db, a + b)
    same("mul", da * db, a * b)
    same("floor_divide", da // db, a // b)
    same("mod", da % db, a % b)
    same("shift/and/xor", ((da << 3) & 0xF0) ^ db, ((a << 3) & 0xF0) ^ b)
    same("compare", da > db, a > b)
    same("where", cp.where(da > 0, da, -db), np.where(a > 0, a, -b))
    x = RNG.standard_normal((300,)).astype(np.float32)
    y = RNG.standard_normal((7, 1)).astype(np.float32)
    dx, dy = cp.asarray(x), cp.asarray(y)
    same("broadcast", dx * dy - 1.5, x * y - np.float32(1.5))
    same("promote", da[0, :5] + dx[:5], a[0, :5] + x[:5])
    same("true_divide", dx / 3, x / np.float32(3))
    i64 = np.arange(-20, 20, dtype=np.int64) * 123456789
    same("int64 mul", cp.asarray(i64) * 97, i64 * 97)
    same("isnan", cp.isnan(cp.asarray([np.nan, 1.0, np.inf])), np.isnan([np.nan, 1.0, np.inf]))
    c = (RNG.standard_normal(50) + 1j * RNG.standard_normal(50)).astype(np.complex64)
    close("complex mul", cp.asarray(c) * cp.asarray(c[::-1]), c * c[::-1], rtol=1e-6)
    close("complex abs", cp.abs(cp.asarray(c)), np.abs(c), rtol=1e-6)


def check_elementwise_math():
    x64 = RNG.uniform(0.01, 4.0, 1000)
    for dt, rtol in ((np.float32, 2e-6), (np.float64, 1e-14)):
        x = x64.astype(dt)
        d = cp.asarray(x)
        for f in ("sin", "exp", "log", "sqrt", "tanh"):
            close(f"{f} {np.dtype(dt).name}", getattr(cp, f)(d), getattr(np, f)(x), rtol=rtol)
        close(f"power {np.dtype(dt).name}", d ** dt(1.7), x ** dt(1.7), rtol=rtol * 4)
    z = cp.asarray(x64)
    same("floor", cp.floor(z * 10), np.floor(x64 * 10))


def check_trig_large_arguments():
    """sin/cos of large arguments: libdevice's float64 argument reduction
    (Payne-Hanek, __internal_trig_reduction_slowpathd) uses extended-
    precision integer PTX (add.cc, addc, madc)."""
    x = np.array([1e3, 1e6, 3e9, 1e15, 1e300, -7e20])
    d = cp.asarray(x)
    close("sin f64", cp.sin(d), np.sin(x), rtol=1e-13, atol=1e-15)
    close("cos f64", cp.cos(d), np.cos(x), rtol=1e-13, atol=1e-15)
    x32 = np.array([1e3, 1e6, 3e9, 1e15, 1e30, -7e20], np.float32)
    close("sin f32", cp.sin(cp.asarray(x32)), np.sin(x32), rtol=1e-6, atol=1e-6)


def check_float16():
    """float16 elementwise arithmetic. CuPy's `float16` type (its
    cupy/float16.cuh) computes in float and converts back, so this needs
    `cvt` between f16 and f32, not f16 arithmetic."""
    x = RNG.uniform(-4, 4, 2000).astype(np.float16)
    y = RNG.uniform(-4, 4, 2000).astype(np.float16)
    dx, dy = cp.asarray(x), cp.asarray(y)
    same("f16 add", dx + dy, x + y)
    same("f16 mul", dx * dy, x * y)
    same("f16 max", cp.maximum(dx, dy), np.maximum(x, y))
    same("f16 compare", dx < dy, x < y)
    same("f16 astype", dx.astype(np.float32), x.astype(np.float32))


def check_float16_sum():
    """A float16 sum: CUB's precompiled DeviceReduce for __half, whose PTX
    adds with `add.f16` / `add.f16x2`."""
    x = RNG.uniform(-4, 4, 2000).astype(np.float16)
    close("f16 sum", cp.asarray(x).sum(), x.sum(), rtol=1e-2, atol=0.5)


def check_elementwise_kernel():
    k = cp.ElementwiseKernel(
        "float32 x, float32 y, float32 a", "float32 z",
        "z = a * x + y", "vgpu_saxpy")
    x = RNG.standard_normal(5000).astype(np.float32)
    y = RNG.standard_normal(5000).astype(np.float32)
    # NVRTC contracts a * x + y to one fma (one rounding): compare with
    # rounding tolerance, not bits.
    close("saxpy", k(cp.asarray(x), cp.asarray(y), np.float32(2.5)),
          np.float32(2.5) * x + y, rtol=1e-6, atol=1e-6)
    # Raw (indexed) arguments and a generic type parameter T.
    rev = cp.ElementwiseKernel(
        "raw T x, int32 n", "T y", "y = x[n - 1 - i] * (T)2", "vgpu_reverse")
    v = np.arange(1000, dtype=np.int64)
    out = cp.empty(1000, dtype=np.int64)
    rev(cp.asarray(v), np.int32(1000), out)
    same("reverse", out, v[::-1] * 2)


class accelerators_off:
    """CuPy's own NVRTC-compiled reduction kernels instead of CUB."""

    def __enter__(self):
        self.saved = (accel.get_reduction_accelerators(), accel.get_routine_accelerators())
        accel.set_reduction_accelerators([])
        accel.set_routine_accelerators([])

    def __exit__(self, *exc):
        accel.set_reduction_accelerators(self.saved[0])
        accel.set_routine_accelerators(self.saved[1])


X = RNG.standard_normal((300, 257)).astype(np.float32)
I = RNG.integers(-50, 50, (300, 257)).astype(np.int64)


def check_reduction_cub():
    """CuPy's default accelerator, CUB: whole-array reductions run the
    device-wide CUB kernels precompiled into the wheel (cupy/cuda/cub.so,
    sm_XX SASS and compute_100 PTX), an axis reduction the CUB block
    reduction CuPy compiles with NVRTC."""
    expect("accelerators", accel.ACCELERATOR_CUB in accel.get_routine_accelerators()
           and accel.ACCELERATOR_CUB in accel.get_reduction_accelerators(),
           f"CUB not among {accel.get_routine_accelerators()} / "
           f"{accel.get_reduction_accelerators()}")
    dx, di = cp.asarray(X), cp.asarray(I)
    close("sum f32", dx.sum(), X.astype(np.float64).sum().astype(np.float32), rtol=1e-5)
    same("sum i64", di.sum(), I.sum())
    same("max", dx.max(), X.max())
    same("min i64", di.min(), I.min())
    same("argmax", dx.argmax(), X.argmax())
    close("sum axis1", dx.sum(axis=1), X.sum(axis=1), rtol=1e-5, atol=1e-4)


def check_reduction_kernel():
    """The reductions of check_reduction_cub and more with accelerators
    off: CuPy's own block-wide shared-memory reduction kernels."""
    dx, di = cp.asarray(X), cp.asarray(I)
    with accelerators_off():
        close("sum f32", dx.sum(), X.astype(np.float64).sum().astype(np.float32), rtol=1e-5)
        same("sum i64", di.sum(), I.sum())
        same("max", dx.max(), X.max())
        same("argmin i64", di.argmin(), I.argmin())
        close("mean", dx.mean(), X.astype(np.float64).mean().astype(np.float32), rtol=1e-5)
        close("sum axis0", dx.sum(axis=0), X.sum(axis=0), rtol=1e-5, atol=1e-4)
        close("sum axis1", dx.sum(axis=1), X.sum(axis=1), rtol=1e-5, atol=1e-4)
        same("max axis1", dx.max(axis=1), X.max(axis=1))
        same("argmax axis0", di.argmax(axis=0), I.argmax(axis=0))
        close("std axis1", dx.std(axis=1), X.std(axis=1), rtol=1e-4)
        same("any axis1", (di > 48).any(axis=1), (I > 48).any(axis=1))
        same("count_nonzero", cp.count_nonzero(di), np.count_nonzero(I))
        same("prod", cp.asarray(I[0, :10] % 5 + 1).prod(), (I[0, :10] % 5 + 1).prod())


def check_reduction_user():
    l2 = cp.ReductionKernel(
        "T x", "T y", "x * x", "a + b", "y = sqrt(a)", "0", "vgpu_l2norm")
    x = RNG.standard_normal((40, 1000)).astype(np.float64)
    with accelerators_off():
        close("l2norm axis1", l2(cp.asarray(x), axis=1), np.sqrt((x * x).sum(axis=1)),
              rtol=1e-12)
        close("l2norm", l2(cp.asarray(x)), np.sqrt((x * x).sum()), rtol=1e-12)


def check_scan_and_indexing():
    v = RNG.integers(0, 100, 10000).astype(np.int32)
    d = cp.asarray(v)
    same("cumsum", cp.cumsum(d), np.cumsum(v))
    same("mask", d[d > 50], v[v > 50])
    idx = RNG.integers(0, 10000, 777)
    same("take", d[cp.asarray(idx)], v[idx])
    same("nonzero", cp.nonzero(d == 7)[0], np.nonzero(v == 7)[0])
    w = d.copy()
    w[cp.asarray(idx)] = -1
    vv = v.copy()
    vv[idx] = -1
    same("scatter", w, vv)


def check_fusion():
    @cp.fuse(kernel_name="vgpu_fused")
    def f(x, y):
        return cp.sqrt(x * x + y * y) + 1

    x = RNG.standard_normal(4096)
    y = RNG.standard_normal(4096)
    close("fuse", f(cp.asarray(x), cp.asarray(y)), np.sqrt(x * x + y * y) + 1, rtol=1e-14)


RAW_SRC = r"""
extern "C" __global__ void vgpu_saxpy(const float* x, float* y, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

// Block-wide sum through dynamic shared memory.
extern "C" __global__ void vgpu_block_sum(const double* x, double* out, int n) {
    extern __shared__ double buf[];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    buf[t] = i < n ? x[i] : 0.0;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}
"""

TEMPLATE_SRC = r"""
__constant__ int vgpu_offset;

template<typename T>
__global__ void vgpu_add_offset(T* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += (T)vgpu_offset;
}

__global__ void vgpu_atomic_hist(const int* x, unsigned int* bins, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(&bins[x[i] & 15], 1u);
}
"""


def check_raw_kernel():
    k = cp.RawKernel(RAW_SRC, "vgpu_saxpy")
    n = 10_001
    x = RNG.standard_normal(n).astype(np.float32)
    y = RNG.standard_normal(n).astype(np.float32)
    dy = cp.asarray(y)
    k(((n + 255) // 256,), (256,), (cp.asarray(x), dy, np.float32(-0.5), np.int32(n)))
    same("saxpy", dy, np.float32(-0.5) * x + y)
    attrs = k.attributes
    detail("raw_kernel", "max_threads_per_block", attrs["max_threads_per_block"])
    expect("attributes", attrs["max_threads_per_block"] >= 256, attrs)

    s = cp.RawKernel(RAW_SRC, "vgpu_block_sum")
    v = RNG.standard_normal(5000)
    blocks = (v.size + 127) // 128
    out = cp.zeros(blocks)
    s((blocks,), (128,), (cp.asarray(v), out, np.int32(v.size)), shared_mem=128 * 8)
    want = np.add.reduceat(v, np.arange(0, v.size, 128))
    close("block_sum", out, want, rtol=1e-12, atol=1e-12)


def check_raw_module():
    exprs = ("vgpu_add_offset<float>", "vgpu_add_offset<long long>")
    m = cp.RawModule(code=TEMPLATE_SRC, options=("-std=c++17",), name_expressions=exprs)
    # __constant__ memory through cuModuleGetGlobal.
    ptr = m.get_global("vgpu_offset")
    cp.ndarray((), np.int32, ptr).fill(42)
    f = RNG.standard_normal(999).astype(np.float32)
    df = cp.asarray(f)
    m.get_function(exprs[0])((4,), (256,), (df, np.int32(f.size)))
    same("template<float>", df, f + np.float32(42))
    i = np.arange(999, dtype=np.int64)
    di = cp.asarray(i)
    m.get_function(exprs[1])((4,), (256,), (di, np.int32(i.size)))
    same("template<long long>", di, i + 42)
    h = m.get_function("_Z16vgpu_atomic_histPKiPji")
    x = RNG.integers(0, 1 << 20, 20000).astype(np.int32)
    bins = cp.zeros(16, dtype=np.uint32)
    h(((x.size + 255) // 256,), (256,), (cp.asarray(x), bins, np.int32(x.size)))
    same("atomic hist", bins, np.bincount(x & 15, minlength=16).astype(np.uint32))


def check_streams():
    n = 1 << 16
    x = RNG.standard_normal(n).astype(np.float32)
    s1 = cp.cuda.Stream(non_blocking=True)
    s2 = cp.cuda.Stream(non_blocking=True)
    pinned = cp.cuda.alloc_pinned_memory(x.nbytes)
    host = np.frombuffer(pinned, np.float32, n)
    host[:] = x
    with s1:
        d = cp.empty(n, np.float32)
        d.set(host, stream=s1)
        start = cp.cuda.Event()
        start.record(s1)
        d *= 3
        d += 1
        done = cp.cuda.Event()
        done.record(s1)
    # s2 waits for s1's work through the event, then reads its result.
    s2.wait_event(done)
    with s2:
        e = d * 2
    back = np.empty_like(x)
    e.get(stream=s2, out=back)
    s2.synchronize()
    same("event-ordered", back, (x * np.float32(3) + np.float32(1)) * np.float32(2))
    done.synchronize()
    expect("done", s1.done and done.done)
    ms = cp.cuda.get_elapsed_time(start, done)
    detail("streams", "elapsed_ms", f"{ms:.3f}")
    expect("elapsed", ms >= 0.0, ms)
    # A host function enqueued behind a kernel runs after it, on another thread.
    seen = []
    with s1:
        d += 1
    s1.launch_host_func(lambda arg: seen.append((arg, threading.get_ident())), "after")
    s1.synchronize()
    expect("host func", len(seen) == 1 and seen[0][0] == "after", seen)
    # The legacy default stream and the per-thread default stream.
    expect("null stream", cp.cuda.Stream.null.ptr == 0, cp.cuda.Stream.null.ptr)
    with cp.cuda.Stream.ptds:
        p = cp.arange(10) * 2
    cp.cuda.Stream.ptds.synchronize()
    same("ptds", p, np.arange(10) * 2)


def check_memory_pool():
    pool = cp.get_default_memory_pool()
    pinned_pool = cp.get_default_pinned_memory_pool()
    cp.cuda.Device().synchronize()
    pool.free_all_blocks()
    base_used, base_total = pool.used_bytes(), pool.total_bytes()
    a = cp.empty(1000, np.uint8)           # rounded to CuPy's 512-byte unit
    b = cp.empty(3 << 20, np.uint8)
    expect("used", pool.used_bytes() - base_used == 1024 + (3 << 20),
           f"{pool.used_bytes() - base_used}")
    a_ptr = a.data.ptr
    del a
    expect("cached", pool.total_bytes() - base_total == 1024 + (3 << 20)
           and pool.used_bytes() - base_used == 3 << 20,
           f"total {pool.total_bytes() - base_total} used {pool.used_bytes() - base_used}")
    c = cp.empty(900, np.uint8)
    expect("reuse", c.data.ptr == a_ptr, f"{c.data.ptr:#x} != {a_ptr:#x}")
    del b, c
    detail("memory_pool", "free_blocks", pool.n_free_blocks())
    pool.free_all_blocks()
    expect("free_all", pool.total_bytes() == base_total, f"{pool.total_bytes()} vs {base_total}")
    pool.set_limit(size=8 << 20)
    try:
        ok = cp.zeros(1 << 20, np.float32)      # 4 MiB fits
        try:
            cp.zeros(2 << 20, np.float32)       # another 8 MiB does not
            raise Mismatch("limit: allocation past the limit succeeded")
        except cp.cuda.memory.OutOfMemoryError:
            pass
        same("under limit", ok[:3], np.zeros(3, np.float32))
        del ok
    finally:
        pool.set_limit(size=0)
    # A 256 MiB allocation (cudaMemsetAsync fills it: the interpreter
    # would take minutes over 2^28 threads) with data at both ends.
    big = cp.zeros(256 << 20, dtype=np.uint8)
    big[-3:] = cp.asarray([1, 2, 3], np.uint8)
    big[:2] = 9
    same("256MiB", cp.concatenate([big[:4], big[-4:]]),
         np.array([9, 9, 0, 0, 0, 1, 2, 3], np.uint8))
    expect("256MiB used", pool.used_bytes() >= 256 << 20, pool.used_bytes())
    del big
    pool.free_all_blocks()
    # Pinned host memory comes from its own pool and is reused.
    p1 = cp.cuda.alloc_pinned_memory(1 << 16)
    del p1
    expect("pinned pool", pinned_pool.n_free_blocks() >= 1, pinned_pool.n_free_blocks())


def check_stream_ordered_alloc():
    """cudaMallocAsync / cudaFreeAsync on the device's default pool
    (cuMemAllocAsync / cuMemFreeAsync), used directly."""
    s = cp.cuda.Stream(non_blocking=True)
    n = 4096
    ptr = cp.cuda.runtime.mallocAsync(n * 8, s.ptr)
    try:
        mem = cp.cuda.UnownedMemory(ptr, n * 8, None)
        a = cp.ndarray((n,), np.float64, cp.cuda.MemoryPointer(mem, 0))
        with s:
            a[...] = cp.arange(n, dtype=np.float64) * 0.5
        host = np.empty(n)
        a.get(stream=s, out=host)
        s.synchronize()
        same("mallocAsync data", host, np.arange(n) * 0.5)
    finally:
        cp.cuda.runtime.freeAsync(ptr, s.ptr)
        s.synchronize()


def check_memory_async_pool():
    """cudaMallocAsync through CuPy's MemoryAsyncPool (the driver's
    stream-ordered allocator, cuMemAllocFromPoolAsync / cuMemFreeAsync)."""
    pool = cp.cuda.MemoryAsyncPool()
    old = cp.cuda.get_allocator()
    cp.cuda.set_allocator(pool.malloc)
    try:
        s = cp.cuda.Stream(non_blocking=True)
        with s:
            a = cp.arange(100000, dtype=np.int64)
            b = (a * 3).sum()
            del a
        s.synchronize()
        same("async alloc", b, np.int64(3 * (99999 * 100000 // 2)))
        detail("memory_async_pool", "used_bytes", pool.used_bytes())
        pool.free_all_blocks()
    finally:
        cp.cuda.set_allocator(old)


def check_matmul_int():
    """Integer matmul: CuPy's own tensordot kernel, no cuBLAS."""
    a = RNG.integers(-9, 9, (33, 47)).astype(np.int32)
    b = RNG.integers(-9, 9, (47, 21)).astype(np.int32)
    same("matmul int32", cp.asarray(a) @ cp.asarray(b), a @ b)


def check_matmul_float():
    """Floating-point matmul: cuBLAS (cublasSgemm / cublasGemmEx)."""
    a = RNG.standard_normal((64, 48)).astype(np.float32)
    b = RNG.standard_normal((48, 32)).astype(np.float32)
    close("matmul f32", cp.asarray(a) @ cp.asarray(b), a @ b, rtol=1e-4, atol=1e-4)


def check_random_generator():
    """cupy.random.default_rng(): CuPy's own XORWOW bit generator, kernels
    NVRTC-compiled from cuRAND's device headers. Checked by the moments
    of 2^16 uniform draws (independent of the generator's exact stream)."""
    g = cp.random.default_rng(5)
    u = cp.asnumpy(g.random(1 << 16))
    expect("range", u.min() >= 0.0 and u.max() < 1.0, (u.min(), u.max()))
    # Mean 1/2 and variance 1/12; 6 sigma of their estimators at n = 2^16.
    expect("mean", abs(u.mean() - 0.5) < 6 * (1 / 12) ** 0.5 / 256, u.mean())
    expect("var", abs(u.var() - 1 / 12) < 6 * (1 / 180) ** 0.5 / 256, u.var())
    expect("distinct", np.unique(u).size > 65000, np.unique(u).size)


def check_random_curand():
    """cupy.random.random(): the legacy API on the cuRAND library
    (curandGenerateUniformDouble; libcurand's kernels, compute_121 PTX)."""
    cp.random.seed(1)
    u = cp.asnumpy(cp.random.random(1 << 16))
    expect("range", u.min() >= 0.0 and u.max() < 1.0, (u.min(), u.max()))
    expect("mean", abs(u.mean() - 0.5) < 6 * (1 / 12) ** 0.5 / 256, u.mean())
    expect("distinct", np.unique(u).size > 65000, np.unique(u).size)


def check_sort():
    """cupy.sort: Thrust's radix sort, precompiled into the wheel's
    cupy/cuda/thrust module."""
    v = RNG.standard_normal(3000).astype(np.float32)
    same("sort", cp.sort(cp.asarray(v)), np.sort(v))
    same("argsort", cp.argsort(cp.asarray(v)), np.argsort(v, kind="stable"))


CHECKS = {
    name[len("check_"):]: fn
    for name, fn in globals().items()
    if name.startswith("check_") and callable(fn)
}


def main(argv):
    names = argv or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"unknown check(s): {unknown}; known: {sorted(CHECKS)}", flush=True)
        return 2
    print(f"import_s={IMPORT_S:.2f}", flush=True)
    print(f"cupy={cp.__version__} numpy={np.__version__}", flush=True)
    print(f"CUPY_COMPILE_WITH_PTX={os.environ.get('CUPY_COMPILE_WITH_PTX', '')}", flush=True)
    passed = failed = 0
    for name in names:
        t = time.perf_counter()
        try:
            CHECKS[name]()
            cp.cuda.Device().synchronize()
        except Exception as e:  # noqa: BLE001 -- every failure is reported
            failed += 1
            reason = f"{type(e).__name__}: {e}".replace("\n", " ")
            print(f"{name}=FAIL {reason}", flush=True)
            traceback.print_exc(file=sys.stderr)
        else:
            passed += 1
            print(f"{name}=ok", flush=True)
        print(f"{name}.seconds={time.perf_counter() - t:.2f}", flush=True)
    print(f"summary passed={passed} failed={failed}", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
