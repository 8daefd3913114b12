// Stream capture and CUDA graphs through the unmodified CUDA runtime,
// compiled by the pinned nvcc at test time and run through the shims on the
// software GPU. Every number is computed again on the CPU; the program
// prints "<name> ok=1" per check (and facts the test reads as key=value)
// and exits non-zero at the first wrong number. argv[1] picks one check
// ("all" by default); argv[2] is a directory for files (the DOT output).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
#include <cuda_runtime.h>

#include "check.cuh"

__global__ void fill(int *p, int v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v + i;
}

__global__ void axpy(int *y, const int *x, int a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += a * x[i];
}

__global__ void incr(int *p) { atomicAdd(p, 1); }

__global__ void scale(int *p, int k, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] *= k;
}

static const int N = 1000;
static const int B = 128;
static const int G = (N + B - 1) / B;

static std::vector<int> get(const int *d, int n) {
    std::vector<int> h(n);
    CHECK(cudaMemcpy(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost));
    return h;
}

// memset(y, 0) -> fill(x, v) -> axpy(y += a*x) -> copy y to z, captured
// on `s` (work on another stream joins it when `fork`).
static void capture_basic(cudaStream_t s, int *x, int *y, int *z, int v, int a) {
    CHECK(cudaMemsetAsync(y, 0, N * sizeof(int), s));
    fill<<<G, B, 0, s>>>(x, v, N);
    axpy<<<G, B, 0, s>>>(y, x, a, N);
    CHECK(cudaMemcpyAsync(z, y, N * sizeof(int), cudaMemcpyDeviceToDevice, s));
}

static bool check_basic(const int *z, int v, int a) {
    std::vector<int> h = get(z, N);
    for (int i = 0; i < N; i++)
        if (h[i] != a * (v + i)) return false;
    return true;
}

static void modes() {
    int *x, *y, *z;
    CHECK(cudaMalloc(&x, N * sizeof(int)));
    CHECK(cudaMalloc(&y, N * sizeof(int)));
    CHECK(cudaMalloc(&z, N * sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const cudaStreamCaptureMode modes[3] = {cudaStreamCaptureModeGlobal,
                                            cudaStreamCaptureModeThreadLocal,
                                            cudaStreamCaptureModeRelaxed};
    const char *names[3] = {"global", "thread_local", "relaxed"};
    for (int m = 0; m < 3; m++) {
        // A clean capture in this mode replays correctly.
        CHECK(cudaStreamBeginCapture(s, modes[m]));
        cudaStreamCaptureStatus st;
        CHECK(cudaStreamIsCapturing(s, &st));
        if (st != cudaStreamCaptureStatusActive) fail("not capturing");
        capture_basic(s, x, y, z, 7 + m, 3);
        cudaGraph_t g;
        CHECK(cudaStreamEndCapture(s, &g));
        size_t n = 0;
        CHECK(cudaGraphGetNodes(g, nullptr, &n));
        if (n != 4) fail("node count");
        cudaGraphExec_t e;
        CHECK(cudaGraphInstantiate(&e, g, 0));
        CHECK(cudaMemset(z, 0, N * sizeof(int)));
        CHECK(cudaGraphLaunch(e, s));
        CHECK(cudaStreamSynchronize(s));
        if (!check_basic(z, 7 + m, 3)) fail("replay numbers");
        CHECK(cudaGraphExecDestroy(e));
        CHECK(cudaGraphDestroy(g));

        // cudaMalloc from another thread (in the default, GLOBAL, mode):
        // refused only while a GLOBAL capture is open, which it
        // invalidates.
        CHECK(cudaStreamBeginCapture(s, modes[m]));
        fill<<<G, B, 0, s>>>(x, 1, N);
        cudaError_t other = cudaSuccess;
        void *p = nullptr;
        std::thread t([&] {
            other = cudaMalloc(&p, 256);
            (void)cudaGetLastError();
        });
        t.join();
        cudaError_t want = m == 0 ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
        if (other != want) {
            fprintf(stderr, "FAIL: %s: cudaMalloc on another thread: %d\n", names[m], (int)other);
            exit(1);
        }
        // On this thread, in GLOBAL mode: refused unless the capture is
        // RELAXED.
        void *q = nullptr;
        cudaError_t mine = cudaMalloc(&q, 256);
        (void)cudaGetLastError();
        cudaError_t want_mine = m == 2 ? cudaSuccess : cudaErrorStreamCaptureUnsupported;
        if (mine != want_mine) {
            fprintf(stderr, "FAIL: %s: cudaMalloc on the capturing thread: %d\n", names[m], (int)mine);
            exit(1);
        }
        cudaError_t end = cudaStreamEndCapture(s, &g);
        (void)cudaGetLastError();
        bool invalidated = m != 2;
        if (end != (invalidated ? cudaErrorStreamCaptureInvalidated : cudaSuccess)) {
            fprintf(stderr, "FAIL: %s: end capture: %d\n", names[m], (int)end);
            exit(1);
        }
        if (invalidated && g != nullptr) fail("an invalidated capture returns no graph");
        if (!invalidated) CHECK(cudaGraphDestroy(g));
        if (p) CHECK(cudaFree(p));
        if (q) CHECK(cudaFree(q));
        printf("mode_%s ok=1\n", names[m]);
    }
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(x));
    CHECK(cudaFree(y));
    CHECK(cudaFree(z));
    printf("modes ok=1\n");
}

static void fork_join() {
    int *a, *b, *out;
    CHECK(cudaMalloc(&a, N * sizeof(int)));
    CHECK(cudaMalloc(&b, N * sizeof(int)));
    CHECK(cudaMalloc(&out, N * sizeof(int)));
    cudaStream_t s1, s2;
    CHECK(cudaStreamCreate(&s1));
    CHECK(cudaStreamCreate(&s2));
    cudaEvent_t forked, joined;
    CHECK(cudaEventCreateWithFlags(&forked, cudaEventDisableTiming));
    CHECK(cudaEventCreateWithFlags(&joined, cudaEventDisableTiming));

    CHECK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal));
    CHECK(cudaMemsetAsync(out, 0, N * sizeof(int), s1));
    CHECK(cudaEventRecord(forked, s1));
    CHECK(cudaStreamWaitEvent(s2, forked, 0));
    cudaStreamCaptureStatus st;
    CHECK(cudaStreamIsCapturing(s2, &st));
    if (st != cudaStreamCaptureStatusActive) fail("s2 did not join the capture");
    fill<<<G, B, 0, s1>>>(a, 10, N);
    fill<<<G, B, 0, s2>>>(b, 1000, N);
    CHECK(cudaEventRecord(joined, s2));
    CHECK(cudaStreamWaitEvent(s1, joined, 0));
    axpy<<<G, B, 0, s1>>>(out, a, 2, N);
    axpy<<<G, B, 0, s1>>>(out, b, 3, N);
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(s1, &g));
    CHECK(cudaStreamIsCapturing(s2, &st));
    if (st != cudaStreamCaptureStatusNone) fail("s2 still capturing");
    size_t n = 0, roots = 0;
    CHECK(cudaGraphGetNodes(g, nullptr, &n));
    CHECK(cudaGraphGetRootNodes(g, nullptr, &roots));
    printf("fork_join nodes=%zu roots=%zu\n", n, roots);
    if (n != 5 || roots != 1) fail("fork/join graph shape");
    cudaGraphExec_t e;
    CHECK(cudaGraphInstantiate(&e, g, 0));
    for (int r = 0; r < 3; r++) CHECK(cudaGraphLaunch(e, s1));
    CHECK(cudaStreamSynchronize(s1));
    std::vector<int> h = get(out, N);
    for (int i = 0; i < N; i++)
        if (h[i] != 2 * (10 + i) + 3 * (1000 + i)) fail("fork/join numbers");

    // A fork that is not joined back fails the capture.
    CHECK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal));
    CHECK(cudaEventRecord(forked, s1));
    CHECK(cudaStreamWaitEvent(s2, forked, 0));
    fill<<<G, B, 0, s2>>>(b, 1, N);
    cudaGraph_t bad;
    EXPECT(cudaStreamEndCapture(s1, &bad), cudaErrorStreamCaptureUnjoined);
    CHECK(cudaStreamIsCapturing(s2, &st));
    if (st != cudaStreamCaptureStatusNone) fail("s2 still capturing after unjoined");

    CHECK(cudaGraphExecDestroy(e));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaEventDestroy(forked));
    CHECK(cudaEventDestroy(joined));
    CHECK(cudaStreamDestroy(s1));
    CHECK(cudaStreamDestroy(s2));
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
    CHECK(cudaFree(out));
    printf("fork_join ok=1\n");
}

// A 4-node graph replayed 100 times: memset(y) -> fill(x) -> axpy(acc +=
// 1*x) -> copy acc to z; acc keeps growing.
static void replay100() {
    int *x, *y, *acc, *z;
    CHECK(cudaMalloc(&x, N * sizeof(int)));
    CHECK(cudaMalloc(&y, N * sizeof(int)));
    CHECK(cudaMalloc(&acc, N * sizeof(int)));
    CHECK(cudaMalloc(&z, N * sizeof(int)));
    CHECK(cudaMemset(acc, 0, N * sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaMemsetAsync(y, 0xff, N * sizeof(int), s));
    fill<<<G, B, 0, s>>>(x, 5, N);
    axpy<<<G, B, 0, s>>>(acc, x, 1, N);
    CHECK(cudaMemcpyAsync(z, acc, N * sizeof(int), cudaMemcpyDeviceToDevice, s));
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t e;
    CHECK(cudaGraphInstantiate(&e, g, 0));
    for (int r = 0; r < 100; r++) CHECK(cudaGraphLaunch(e, s));
    CHECK(cudaStreamSynchronize(s));
    std::vector<int> h = get(z, N), hy = get(y, N);
    for (int i = 0; i < N; i++) {
        if (h[i] != 100 * (5 + i)) fail("replay100 numbers");
        if (hy[i] != -1) fail("replay100 memset");
    }
    CHECK(cudaGraphExecDestroy(e));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    for (int *p : {x, y, acc, z}) CHECK(cudaFree(p));
    printf("replay100 ok=1\n");
}

// Capture again with other arguments and update the executable graph.
static void update() {
    int *x, *y, *z;
    CHECK(cudaMalloc(&x, N * sizeof(int)));
    CHECK(cudaMalloc(&y, N * sizeof(int)));
    CHECK(cudaMalloc(&z, N * sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    cudaGraph_t g;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    capture_basic(s, x, y, z, 1, 2);
    CHECK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t e;
    CHECK(cudaGraphInstantiate(&e, g, 0));
    CHECK(cudaGraphLaunch(e, s));
    CHECK(cudaStreamSynchronize(s));
    if (!check_basic(z, 1, 2)) fail("before update");
    for (int round = 0; round < 3; round++) {
        cudaGraph_t g2;
        CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
        capture_basic(s, x, y, z, 100 + round, 5 + round);
        CHECK(cudaStreamEndCapture(s, &g2));
        cudaGraphExecUpdateResultInfo info;
        CHECK(cudaGraphExecUpdate(e, g2, &info));
        if (info.result != cudaGraphExecUpdateSuccess) fail("update result");
        CHECK(cudaGraphLaunch(e, s));
        CHECK(cudaStreamSynchronize(s));
        if (!check_basic(z, 100 + round, 5 + round)) fail("after update");
        CHECK(cudaGraphDestroy(g2));
    }
    // Another topology cannot be applied.
    cudaGraph_t g3;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    fill<<<G, B, 0, s>>>(x, 1, N);
    CHECK(cudaStreamEndCapture(s, &g3));
    cudaGraphExecUpdateResultInfo info;
    EXPECT(cudaGraphExecUpdate(e, g3, &info), cudaErrorGraphExecUpdateFailure);
    if (info.result != cudaGraphExecUpdateErrorTopologyChanged) fail("topology result");
    CHECK(cudaGraphDestroy(g3));
    CHECK(cudaGraphExecDestroy(e));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    for (int *p : {x, y, z}) CHECK(cudaFree(p));
    printf("update ok=1\n");
}

// What the host node sees: the sum of the copied data, per launch.
static std::vector<long> sums;
static int host_buf[N];

static void CUDART_CB sum_host(void *) {
    long t = 0;
    for (int i = 0; i < N; i++) t += host_buf[i];
    sums.push_back(t);
}

// Built with the explicit API: memset -> kernel -> memcpy to the host ->
// host node; launched with new kernel parameters between launches.
static void host_node() {
    int *d;
    CHECK(cudaMalloc(&d, N * sizeof(int)));
    cudaGraph_t g;
    CHECK(cudaGraphCreate(&g, 0));
    cudaGraphNode_t ms, k, cp, hn;
    cudaMemsetParams mp = {};
    mp.dst = d;
    mp.value = 0;
    mp.elementSize = 4;
    mp.width = N;
    mp.height = 1;
    CHECK(cudaGraphAddMemsetNode(&ms, g, nullptr, 0, &mp));
    int v = 3, n = N;
    void *args[3] = {&d, &v, &n};
    cudaKernelNodeParams kp = {};
    kp.func = (void *)fill;
    kp.gridDim = dim3(G);
    kp.blockDim = dim3(B);
    kp.kernelParams = args;
    CHECK(cudaGraphAddKernelNode(&k, g, &ms, 1, &kp));
    CHECK(cudaGraphAddMemcpyNode1D(&cp, g, &k, 1, host_buf, d, N * sizeof(int), cudaMemcpyDeviceToHost));
    cudaHostNodeParams hp = {};
    hp.fn = sum_host;
    CHECK(cudaGraphAddHostNode(&hn, g, &cp, 1, &hp));
    cudaGraphNodeType ty;
    CHECK(cudaGraphNodeGetType(hn, &ty));
    if (ty != cudaGraphNodeTypeHost) fail("host node type");
    cudaKernelNodeParams back = {};
    CHECK(cudaGraphKernelNodeGetParams(k, &back));
    if (back.gridDim.x != (unsigned)G || *(int *)back.kernelParams[1] != 3) fail("kernel node params");
    cudaGraphExec_t e;
    CHECK(cudaGraphInstantiate(&e, g, 0));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    long want[4];
    for (int r = 0; r < 4; r++) {
        int vr = 10 * r;
        void *ar[3] = {&d, &vr, &n};
        cudaKernelNodeParams kr = kp;
        kr.kernelParams = ar;
        CHECK(cudaGraphExecKernelNodeSetParams(e, k, &kr));
        CHECK(cudaGraphLaunch(e, s));
        want[r] = (long)N * vr + (long)N * (N - 1) / 2;
    }
    CHECK(cudaStreamSynchronize(s));
    if (sums.size() != 4) fail("host node runs");
    for (int r = 0; r < 4; r++)
        if (sums[r] != want[r]) {
            fprintf(stderr, "FAIL: launch %d: host node saw %ld, want %ld\n", r, sums[r], want[r]);
            exit(1);
        }
    CHECK(cudaGraphExecDestroy(e));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(d));
    printf("host_node ok=1\n");
}

// cudaGraphExecKernelNodeSetParams alone, on a captured graph.
static void set_params() {
    int *d;
    CHECK(cudaMalloc(&d, N * sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    fill<<<G, B, 0, s>>>(d, 1, N);
    scale<<<G, B, 0, s>>>(d, 2, N);
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(s, &g));
    cudaGraphNode_t nodes[2];
    size_t n = 2;
    CHECK(cudaGraphGetNodes(g, nodes, &n));
    cudaGraphExec_t e;
    CHECK(cudaGraphInstantiate(&e, g, 0));
    CHECK(cudaGraphLaunch(e, s));
    CHECK(cudaStreamSynchronize(s));
    std::vector<int> h = get(d, N);
    for (int i = 0; i < N; i++)
        if (h[i] != 2 * (1 + i)) fail("before set params");
    cudaKernelNodeParams kp = {};
    CHECK(cudaGraphKernelNodeGetParams(nodes[1], &kp));
    int k = 7, cnt = N;
    void *args[3] = {&d, &k, &cnt};
    kp.kernelParams = args;
    CHECK(cudaGraphExecKernelNodeSetParams(e, nodes[1], &kp));
    CHECK(cudaGraphLaunch(e, s));
    CHECK(cudaStreamSynchronize(s));
    h = get(d, N);
    for (int i = 0; i < N; i++)
        if (h[i] != 7 * (1 + i)) fail("after set params");
    // The graph itself kept the old parameters.
    cudaKernelNodeParams still = {};
    CHECK(cudaGraphKernelNodeGetParams(nodes[1], &still));
    if (*(int *)still.kernelParams[1] != 2) fail("graph node changed");
    // Disabled, the node does nothing.
    CHECK(cudaGraphNodeSetEnabled(e, nodes[1], 0));
    unsigned on = 1;
    CHECK(cudaGraphNodeGetEnabled(e, nodes[1], &on));
    if (on) fail("still enabled");
    CHECK(cudaGraphLaunch(e, s));
    CHECK(cudaStreamSynchronize(s));
    h = get(d, N);
    for (int i = 0; i < N; i++)
        if (h[i] != 1 + i) fail("disabled node ran");
    CHECK(cudaGraphExecDestroy(e));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(d));
    printf("set_params ok=1\n");
}

// Kernel node attributes: read, set, copied between nodes, refused where
// cuda.h makes them launch-only, and taken by the host at instantiation.
static void attributes() {
    int *d;
    CHECK(cudaMalloc(&d, N * sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    fill<<<G, B, 0, s>>>(d, 3, N);
    scale<<<G, B, 0, s>>>(d, 5, N);
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(s, &g));
    cudaGraphNode_t nodes[2];
    size_t n = 2;
    CHECK(cudaGraphGetNodes(g, nodes, &n));
    cudaLaunchAttributeValue v = {};
    v.priority = 42;
    CHECK(cudaGraphKernelNodeGetAttribute(nodes[1], cudaLaunchAttributePriority, &v));
    if (v.priority != 0) fail("a captured plain launch has priority 0");
    int least, greatest;
    CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    v.priority = greatest;
    CHECK(cudaGraphKernelNodeSetAttribute(nodes[1], cudaLaunchAttributePriority, &v));
    cudaLaunchAttributeValue c = {};
    c.cooperative = 1;
    CHECK(cudaGraphKernelNodeSetAttribute(nodes[1], cudaLaunchAttributeCooperative, &c));
    cudaLaunchAttributeValue back = {};
    CHECK(cudaGraphKernelNodeGetAttribute(nodes[1], cudaLaunchAttributePriority, &back));
    if (back.priority != greatest) fail("priority read back");
    CHECK(cudaGraphKernelNodeCopyAttributes(nodes[0], nodes[1]));
    back = {};
    CHECK(cudaGraphKernelNodeGetAttribute(nodes[0], cudaLaunchAttributeCooperative, &back));
    if (back.cooperative != 1) fail("cooperative copied");
    CHECK(cudaGraphKernelNodeGetAttribute(nodes[0], cudaLaunchAttributePriority, &back));
    if (back.priority != greatest) fail("priority copied");
    cudaLaunchAttributeValue pss = {};
    pss.programmaticStreamSerializationAllowed = 1;
    cudaError_t r = cudaGraphKernelNodeSetAttribute(
        nodes[1], cudaLaunchAttributeProgrammaticStreamSerialization, &pss);
    if (r != cudaErrorInvalidValue) {
        fprintf(stderr, "FAIL: launch-only attribute on a node: %s\n", cudaGetErrorName(r));
        exit(1);
    }
    (void)cudaGetLastError();
    cudaGraphExec_t e;
    CHECK(cudaGraphInstantiate(&e, g, 0));
    CHECK(cudaGraphLaunch(e, s));
    CHECK(cudaStreamSynchronize(s));
    std::vector<int> h = get(d, N);
    for (int i = 0; i < N; i++)
        if (h[i] != 5 * (3 + i)) fail("graph with attributes");
    CHECK(cudaGraphExecDestroy(e));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(d));
    printf("attributes ok=1\n");
}

static void k256() {
    int *c;
    CHECK(cudaMalloc(&c, sizeof(int)));
    CHECK(cudaMemset(c, 0, sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < 256; i++) incr<<<1, 1, 0, s>>>(c);
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(s, &g));
    size_t n = 0;
    CHECK(cudaGraphGetNodes(g, nullptr, &n));
    if (n != 256) fail("256 nodes");
    cudaGraphExec_t e;
    CHECK(cudaGraphInstantiate(&e, g, 0));
    for (int r = 0; r < 50; r++) CHECK(cudaGraphLaunch(e, s));
    CHECK(cudaStreamSynchronize(s));
    int h = 0;
    CHECK(cudaMemcpy(&h, c, sizeof(int), cudaMemcpyDeviceToHost));
    if (h != 256 * 50) fail("256 x 50 increments");
    CHECK(cudaGraphExecDestroy(e));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(c));
    printf("k256 ok=1\n");
}

// A synchronization inside a capture is refused and invalidates it; the
// stream works normally afterwards.
static void illegal_sync() {
    int *d;
    CHECK(cudaMalloc(&d, N * sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    fill<<<G, B, 0, s>>>(d, 1, N);
    EXPECT(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
    cudaStreamCaptureStatus st;
    CHECK(cudaStreamIsCapturing(s, &st));
    if (st != cudaStreamCaptureStatusInvalidated) fail("not invalidated");
    cudaGraph_t g = (cudaGraph_t)0x1;
    EXPECT(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    if (g != nullptr) fail("graph of an invalidated capture");
    CHECK(cudaStreamIsCapturing(s, &st));
    if (st != cudaStreamCaptureStatusNone) fail("still capturing");
    fill<<<G, B, 0, s>>>(d, 40, N);
    CHECK(cudaStreamSynchronize(s));
    std::vector<int> h = get(d, N);
    for (int i = 0; i < N; i++)
        if (h[i] != 40 + i) fail("stream after the failed capture");
    // The legacy stream while a blocking stream captures: implicit.
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    EXPECT(cudaMemset(d, 0, N * sizeof(int)), cudaErrorStreamCaptureImplicit);
    EXPECT(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(d));
    printf("illegal_sync ok=1\n");
}

// cudaMallocAsync / cudaFreeAsync inside a capture: graph memory, at the
// same address at every launch.
static void mem_nodes() {
    int *out;
    CHECK(cudaMalloc(&out, N * sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    int *tmp = nullptr;
    CHECK(cudaMallocAsync((void **)&tmp, N * sizeof(int), s));
    fill<<<G, B, 0, s>>>(tmp, 9, N);
    scale<<<G, B, 0, s>>>(tmp, 3, N);
    CHECK(cudaMemcpyAsync(out, tmp, N * sizeof(int), cudaMemcpyDeviceToDevice, s));
    CHECK(cudaFreeAsync(tmp, s));
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(s, &g));
    cudaGraphNode_t nodes[8];
    size_t n = 8;
    CHECK(cudaGraphGetNodes(g, nodes, &n));
    if (n != 5) fail("mem node count");
    cudaGraphNodeType first, last;
    CHECK(cudaGraphNodeGetType(nodes[0], &first));
    CHECK(cudaGraphNodeGetType(nodes[4], &last));
    if (first != cudaGraphNodeTypeMemAlloc || last != cudaGraphNodeTypeMemFree) fail("mem node types");
    cudaMemAllocNodeParams ap = {};
    CHECK(cudaGraphMemAllocNodeGetParams(nodes[0], &ap));
    if (ap.dptr != tmp || ap.bytesize != N * sizeof(int)) fail("alloc node params");
    cudaGraphExec_t e;
    CHECK(cudaGraphInstantiate(&e, g, 0));
    for (int r = 0; r < 3; r++) {
        CHECK(cudaMemset(out, 0, N * sizeof(int)));
        CHECK(cudaGraphLaunch(e, s));
        CHECK(cudaStreamSynchronize(s));
        std::vector<int> h = get(out, N);
        for (int i = 0; i < N; i++)
            if (h[i] != 3 * (9 + i)) fail("graph memory numbers");
    }
    // One executable graph at a time for a graph with memory nodes.
    cudaGraphExec_t e2;
    EXPECT(cudaGraphInstantiate(&e2, g, 0), cudaErrorInvalidValue);
    CHECK(cudaGraphExecDestroy(e));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(out));
    printf("mem_nodes ok=1\n");
}

// Model queries and the DOT file, no launch.
static void model(const char *dir) {
    int *d;
    CHECK(cudaMalloc(&d, N * sizeof(int)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    unsigned long long id1 = 0, id2 = 0;
    cudaStreamCaptureStatus st;
    CHECK(cudaStreamGetCaptureInfo(s, &st, &id1));
    fill<<<G, B, 0, s>>>(d, 1, N);
    scale<<<G, B, 0, s>>>(d, 2, N);
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaStreamGetCaptureInfo(s, &st, &id2));
    cudaGraph_t g2;
    CHECK(cudaStreamEndCapture(s, &g2));
    if (id1 == id2) fail("capture ids repeat");
    cudaGraph_t c;
    CHECK(cudaGraphClone(&c, g));
    size_t n = 0;
    CHECK(cudaGraphGetNodes(c, nullptr, &n));
    if (n != 2) fail("clone node count");
    char path[4096];
    snprintf(path, sizeof path, "%s/graph.dot", dir);
    CHECK(cudaGraphDebugDotPrint(g, path, cudaGraphDebugDotFlagsVerbose));
    CHECK(cudaGraphDestroy(c));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaGraphDestroy(g2));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(d));
    printf("model ok=1\n");
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : "all";
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    bool all = !strcmp(only, "all");
    CHECK(cudaFree(0));
    if (all || !strcmp(only, "model")) model(dir);
    if (all || !strcmp(only, "modes")) modes();
    if (all || !strcmp(only, "fork_join")) fork_join();
    if (all || !strcmp(only, "replay100")) replay100();
    if (all || !strcmp(only, "update")) update();
    if (all || !strcmp(only, "host_node")) host_node();
    if (all || !strcmp(only, "set_params")) set_params();
    if (all || !strcmp(only, "attributes")) attributes();
    if (all || !strcmp(only, "k256")) k256();
    if (all || !strcmp(only, "illegal_sync")) illegal_sync();
    if (all || !strcmp(only, "mem_nodes")) mem_nodes();
    printf("done ok=1\n");
    return 0;
}
