"""PyTorch (2.15.0, +cu132 default build) on the vgpu device: the first
steps every torch user takes. Used by the opt-in (#[ignore]d) tests/torch.rs.

Every step prints `key=value`, or `key=ERROR:<type>: <message>` and the
later steps that need it are skipped; warnings torch raises (e.g. why CUDA is
unavailable) are printed as `warning=...`. Exit 0 only if every step worked.
"""
import sys
import traceback
import warnings

warnings.simplefilter("always")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    text = str(message).replace("\n", " ")
    print(f"warning={category.__name__}: {text}", flush=True)


warnings.showwarning = _show_warning

FAILED = []


def step(key, fn):
    try:
        value = fn()
    except Exception as e:  # report, keep going where possible
        text = f"{type(e).__name__}: {e}".replace("\n", " | ")
        print(f"{key}=ERROR:{text}", flush=True)
        traceback.print_exc()
        FAILED.append(key)
        return None
    print(f"{key}={value}", flush=True)
    return value


def graph_replay():
    """torch.cuda.CUDAGraph: capture (on torch's side stream, after a warm-up
    there, as torch requires) two device-to-device copies, then replay the
    graph three times with new inputs. Copies need no kernel, so this runs
    on the software GPU too."""
    import torch

    x = torch.zeros(1024, device="cuda")
    y = torch.zeros(1024, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y.copy_(x)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y.copy_(x)
        y[512:].copy_(x[:512])
    for r in range(3):
        x.copy_(torch.arange(1024.0) + r)
        g.replay()
        torch.cuda.synchronize()
        want = torch.arange(1024.0) + r
        want[512:] = torch.arange(512.0) + r
        if not torch.equal(y.cpu(), want):
            raise AssertionError(f"replay {r}: {y.cpu()[:4]} ... want {want[:4]} ...")
    return True


def main():
    import torch

    print(f"torch_version={torch.__version__}", flush=True)
    print(f"torch_cuda_version={torch.version.cuda}", flush=True)
    step("device_count", torch.cuda.device_count)
    available = step("is_available", torch.cuda.is_available)
    if not available:
        # The error that made it unavailable.
        step("init", torch.cuda.init)
        FAILED.append("is_available")
        return 1
    step("device_name", lambda: torch.cuda.get_device_name(0))
    step("capability", lambda: "%d.%d" % torch.cuda.get_device_capability(0))
    step("total_memory", lambda: torch.cuda.get_device_properties(0).total_memory)
    step("mem_get_info", lambda: "%d,%d" % torch.cuda.mem_get_info())
    x = step("to_cuda", lambda: torch.arange(1024.0).cuda().device)
    if x is not None:
        # A tensor to the device and back: copies only, no kernel.
        step("roundtrip", lambda: bool(torch.equal(torch.arange(1024.0).cuda().cpu(), torch.arange(1024.0))))

        # torch's kernels ship as SASS for real GPUs; the software GPU runs
        # PTX only, so these two need a real GPU behind the daemon. Their
        # outcome is reported, not counted as a failure.
        def compute(key, fn):
            try:
                print(f"{key}={fn()}", flush=True)
            except Exception as e:
                text = f"{type(e).__name__}: {e}".replace("\n", " | ")
                print(f"{key}=ERROR:{text}", flush=True)

        def double():
            x = torch.arange(1024.0).cuda()
            y = (x * 2).cpu()
            want = torch.arange(1024.0) * 2
            return bool(torch.equal(y, want))

        compute("mul_roundtrip", double)
        compute("sum", lambda: float(torch.arange(1024.0, device="cuda").sum().item()))
        step("synchronize", lambda: torch.cuda.synchronize() or "ok")
        step("graph_replay", graph_replay)
    print(f"failed={','.join(FAILED) or 'none'}", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
