"""The Python-library measurements of scripts/gpu-check.sh.

    python3 pybench.py torch|numba|cupy [--small]

Runs unchanged natively and as a vgpu guest (`vgpu run -- python3 ...`), and
prints the same line protocol as cudabench.c: `figure NAME UNIT VALUE`,
`check NAME VALUE` (must equal the native run's), `skip NAME REASON`,
`error NAME REASON` (exit status 1). Each measurement checks its own result
against a reference computed independently (on the CPU, or in fp32 by a
different formula) before it reports a figure. `--small` shrinks every
problem so that vgpu's software GPU finishes it in seconds.
"""

import sys
import time
import traceback

SMALL = "--small" in sys.argv
ITERS = 3 if SMALL else 20


def say(kind, name, *rest):
    print(kind, name, *rest, flush=True)


def import_or_skip(names, module):
    """Imports `module`, or reports every figure in `names` as skipped."""
    try:
        return __import__(module, fromlist=["_"])
    except Exception as e:  # ImportError, or a library that fails to load
        for n in names:
            say("skip", n, f"import {module} failed: {type(e).__name__}: {e}".splitlines()[0])
        sys.exit(0)


def torch_bench():
    names = ["matmul-fp16", "sdpa-fp16"]
    torch = import_or_skip(names, "torch")
    if not torch.cuda.is_available():
        for n in names:
            say("skip", n, f"torch {torch.__version__}: torch.cuda.is_available() is False")
        return
    import torch.nn.functional as F

    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(1234)

    def timed(fn):
        fn()
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(ITERS):
            out = fn()
        end.record()
        end.synchronize()
        return out, start.elapsed_time(end) / 1e3 / ITERS

    # fp16 matrix product (cuBLAS / cuBLASLt).
    n = 256 if SMALL else 8192
    a = torch.randn(n, n, generator=gen).to(dev, torch.float16)
    b = torch.randn(n, n, generator=gen).to(dev, torch.float16)
    c, sec = timed(lambda: a @ b)
    ref = a[:64].float().cpu() @ b[:, :64].float().cpu()
    got = c[:64, :64].float().cpu()
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    if rel > 1e-2:
        say("error", "matmul-fp16", f"corner differs from the CPU product by {rel:.3g} (relative)")
        sys.exit(1)
    say("figure", "matmul-fp16", "TFLOP/s", f"{2 * n**3 / sec / 1e12:.4g}")
    say("check", "matmul-fp16-abssum", f"{c.float().abs().sum().item():.4e}")

    # Scaled-dot-product attention (fused flash / memory-efficient kernels).
    bsz, heads, seq, dim = (1, 2, 64, 32) if SMALL else (8, 16, 2048, 128)
    q, k, v = (torch.randn(bsz, heads, seq, dim, generator=gen).to(dev, torch.float16) for _ in range(3))
    o, sec = timed(lambda: F.scaled_dot_product_attention(q, k, v))
    q0, k0, v0 = (t[0, 0].float() for t in (q, k, v))
    ref = torch.softmax(q0 @ k0.T / dim**0.5, dim=-1) @ v0
    err = (o[0, 0].float() - ref).abs().max().item()
    if err > 2e-2:
        say("error", "sdpa-fp16", f"head 0 differs from the fp32 formula by {err:.3g}")
        sys.exit(1)
    say("figure", "sdpa-fp16", "TFLOP/s", f"{4 * bsz * heads * seq * seq * dim / sec / 1e12:.4g}")
    say("check", "sdpa-fp16-abssum", f"{o.float().abs().sum().item():.4e}")


def saxpy_inputs(np, n):
    # Small integers and a = 2: every result is exact in fp32, with or
    # without fused multiply-add, so the CPU reference is exact.
    x = (np.arange(n, dtype=np.int64) % 1000).astype(np.float32)
    y = (np.arange(n, dtype=np.int64) % 777).astype(np.float32)
    return np.float32(2.0), x, y


def report_saxpy(np, name, out, a, x, y, sec, n):
    want = a * x + y
    if not np.array_equal(out, want):
        bad = int(np.argmax(out != want))
        say("error", name, f"element {bad} is {out[bad]}, expected {want[bad]}")
        sys.exit(1)
    say("figure", name, "GB/s", f"{3 * 4 * n / sec / 1e9:.4g}")
    say("check", f"{name}-sum", f"{int(out.astype(np.float64).sum())}")


def numba_bench():
    name = "numba-saxpy"
    np = import_or_skip([name], "numpy")
    cuda = import_or_skip([name], "numba.cuda")
    if not cuda.is_available():
        say("skip", name, "numba.cuda.is_available() is False")
        return

    @cuda.jit
    def saxpy(a, x, y, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a * x[i] + y[i]

    n = 1 << (12 if SMALL else 26)
    a, x, y = saxpy_inputs(np, n)
    dx, dy, dout = cuda.to_device(x), cuda.to_device(y), cuda.device_array(n, np.float32)
    blocks = (n + 255) // 256
    saxpy[blocks, 256](a, dx, dy, dout)
    cuda.synchronize()
    start, end = cuda.event(), cuda.event()
    start.record()
    for _ in range(ITERS):
        saxpy[blocks, 256](a, dx, dy, dout)
    end.record()
    end.synchronize()
    sec = cuda.event_elapsed_time(start, end) / 1e3 / ITERS
    report_saxpy(np, name, dout.copy_to_host(), a, x, y, sec, n)


CUPY_SAXPY = r"""
extern "C" __global__ void saxpy(float a, const float *x, const float *y, float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a * x[i] + y[i];
}
"""


def cupy_bench():
    name = "cupy-saxpy"
    np = import_or_skip([name], "numpy")
    cp = import_or_skip([name], "cupy")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as e:
        say("skip", name, f"cupy sees no device: {type(e).__name__}: {e}".splitlines()[0])
        return
    if count < 1:
        say("skip", name, "cupy sees no device")
        return
    kernel = cp.RawKernel(CUPY_SAXPY, "saxpy")
    n = 1 << (12 if SMALL else 26)
    a, x, y = saxpy_inputs(np, n)
    dx, dy, dout = cp.asarray(x), cp.asarray(y), cp.empty(n, cp.float32)
    blocks = ((n + 255) // 256,)
    args = (a, dx, dy, dout, np.int32(n))
    kernel(blocks, (256,), args)
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(ITERS):
        kernel(blocks, (256,), args)
    end.record()
    end.synchronize()
    sec = cp.cuda.get_elapsed_time(start, end) / 1e3 / ITERS
    report_saxpy(np, name, cp.asnumpy(dout), a, x, y, sec, n)


def main():
    benches = {"torch": torch_bench, "numba": numba_bench, "cupy": cupy_bench}
    which = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(which) != 1 or which[0] not in benches:
        print(f"usage: {sys.argv[0]} {'|'.join(benches)} [--small]", file=sys.stderr)
        sys.exit(2)
    t = time.monotonic()
    try:
        benches[which[0]]()
    except SystemExit:
        raise
    except BaseException as e:
        traceback.print_exc()
        say("error", which[0], f"{type(e).__name__}: {e}".splitlines()[0])
        sys.exit(1)
    say("info", which[0], f"{time.monotonic() - t:.1f}s")


if __name__ == "__main__":
    main()
