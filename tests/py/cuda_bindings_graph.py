"""Stream capture and an explicit graph through NVIDIA's cuda-bindings
driver module (tests/graphs.rs runs it with the numba venv's python).

Capture: two memsets and a device-to-device copy on a stream, replayed
three times; explicit: a memset node and a copy node built with the graph
API, its memset value changed in the executable graph. Every number is
checked here; prints `key=value` lines and exits 1 on the first failure.
"""
import sys

from cuda.bindings import driver as cu


class Failed(Exception):
    pass


def call(name, *args):
    res = getattr(cu, name)(*args)
    err, vals = res[0], res[1:]
    if err != cu.CUresult.CUDA_SUCCESS:
        print(f"FAIL {name} {err.name} ({int(err)})", flush=True)
        raise Failed(name)
    if len(vals) == 0:
        return None
    return vals[0] if len(vals) == 1 else vals


def show(key, value):
    print(f"{key}={value}", flush=True)


def words(dptr, n):
    back = bytearray(4 * n)
    call("cuMemcpyDtoH", back, dptr, 4 * n)
    return [int.from_bytes(back[4 * i : 4 * i + 4], "little") for i in range(n)]


def main():
    n = 4096
    call("cuInit", 0)
    dev = call("cuDeviceGet", 0)
    ctx = call("cuDevicePrimaryCtxRetain", dev)
    call("cuCtxSetCurrent", ctx)
    a = call("cuMemAlloc", 4 * n)
    b = call("cuMemAlloc", 4 * n)
    stream = call("cuStreamCreate", 0)

    call("cuStreamBeginCapture", stream, cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_GLOBAL)
    status = call("cuStreamIsCapturing", stream)
    show("capturing", status == cu.CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_ACTIVE)
    call("cuMemsetD32Async", a, 0x11223344, n, stream)
    call("cuMemsetD32Async", b, 0, n, stream)
    call("cuMemcpyDtoDAsync", b, a, 4 * (n // 2), stream)
    graph = call("cuStreamEndCapture", stream)
    nodes, count = call("cuGraphGetNodes", graph, 8)
    show("captured_nodes", count)
    types = [call("cuGraphNodeGetType", nodes[i]) for i in range(count)]
    show("captured_types", ",".join(t.name.removeprefix("CU_GRAPH_NODE_TYPE_") for t in types))
    exe = call("cuGraphInstantiate", graph, 0)
    call("cuMemsetD32", b, 0xFFFFFFFF, n)
    for _ in range(3):
        call("cuGraphLaunch", exe, stream)
    call("cuStreamSynchronize", stream)
    got = words(b, n)
    want = [0x11223344] * (n // 2) + [0] * (n // 2)
    show("captured_replay_equal", got == want)
    call("cuGraphExecDestroy", exe)
    call("cuGraphDestroy", graph)

    # The explicit API: memset(a, v) -> copy a to b, and a new value set in
    # the executable graph.
    graph = call("cuGraphCreate", 0)
    p = cu.CUDA_MEMSET_NODE_PARAMS()
    p.dst = a
    p.pitch = 0
    p.value = 5
    p.elementSize = 4
    p.width = n
    p.height = 1
    ms = call("cuGraphAddMemsetNode", graph, None, 0, p, ctx)
    cp = cu.CUDA_MEMCPY3D()
    cp.srcMemoryType = cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
    cp.srcDevice = a
    cp.dstMemoryType = cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
    cp.dstDevice = b
    cp.WidthInBytes = 4 * n
    cp.Height = 1
    cp.Depth = 1
    copy = call("cuGraphAddMemcpyNode", graph, [ms], 1, cp, ctx)
    deps, ndeps = call("cuGraphNodeGetDependencies", copy, 4)
    show("explicit_deps", ndeps)
    exe = call("cuGraphInstantiate", graph, 0)
    call("cuGraphLaunch", exe, stream)
    call("cuStreamSynchronize", stream)
    show("explicit_first_equal", words(b, n) == [5] * n)
    p.value = 6
    call("cuGraphExecMemsetNodeSetParams", exe, ms, p, ctx)
    call("cuGraphLaunch", exe, stream)
    call("cuStreamSynchronize", stream)
    show("explicit_set_params_equal", words(b, n) == [6] * n)
    back = call("cuGraphMemsetNodeGetParams", ms)
    show("graph_node_value", back.value)
    call("cuGraphExecDestroy", exe)
    call("cuGraphDestroy", graph)
    call("cuStreamDestroy", stream)
    call("cuMemFree", a)
    call("cuMemFree", b)
    show("done", "ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed:
        sys.exit(1)
