/* Hopper launch features through libvgpu_cuda.so against the software GPU:
 * cuLaunchKernelEx with launch attributes (direct and captured into a
 * graph), the occupancy questions cuBLAS asks (dynamic shared memory per
 * block, cluster occupancy) and tensor maps.
 *
 *   hopper LIB
 *
 * Prints "ok NAME" or "FAIL NAME: ..." per check; exits 1 if any failed.
 * The expected codes are cuda.h's; where the software GPU decides (it runs
 * clusters of one block only), the comment says so. */
#include "vgpu_test.h"

typedef void *CUmodule, *CUfunction, *CUstream, *CUevent, *CUgraph, *CUgraphExec;
typedef unsigned long long CUdeviceptr;

typedef struct {
    unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
    CUstream hStream;
    void *attrs;
    unsigned numAttrs;
} CUlaunchConfig;

typedef struct {
    unsigned id;
    char pad[4];
    union {
        char bytes[64];
        int cooperative;
        int priority;
        unsigned syncPolicy;
        struct {
            unsigned x, y, z;
        } clusterDim;
        struct {
            CUevent event;
            int flags;
        } completion;
        struct {
            void *base_ptr;
            size_t num_bytes;
            float hitRatio;
            int hitProp, missProp;
        } window;
    } value;
} CUlaunchAttribute;

typedef struct {
    unsigned long long opaque[16];
} __attribute__((aligned(64))) CUtensorMap;

enum {
    ATTR_ACCESS_POLICY_WINDOW = 1,
    ATTR_COOPERATIVE = 2,
    ATTR_SYNCHRONIZATION_POLICY = 3,
    ATTR_CLUSTER_DIMENSION = 4,
    ATTR_PRIORITY = 8,
    ATTR_LAUNCH_COMPLETION_EVENT = 12,
};

#define INVALID_VALUE 1
#define INVALID_HANDLE 400
#define NOT_SUPPORTED 801
#define CAPTURE_STATUS_ACTIVE 1
#define GRAPH_EXEC_UPDATE_FAILURE 910
#define UPDATE_ERROR_ATTRIBUTES_CHANGED 8
#define INVALID_CLUSTER_SIZE 912
#define EVENT_DISABLE_TIMING 2
#define CAPTURE_RELAXED 2

/* out[i] = v + i for the block's threads. */
static const char PTX[] =
    ".version 7.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    ".visible .entry fill(.param .u64 out, .param .u32 v)\n"
    "{\n"
    "  .reg .b32 %r<4>;\n"
    "  .reg .b64 %rd<4>;\n"
    "  ld.param.u64 %rd1, [out];\n"
    "  ld.param.u32 %r1, [v];\n"
    "  mov.u32 %r2, %tid.x;\n"
    "  add.u32 %r3, %r1, %r2;\n"
    "  cvta.to.global.u64 %rd2, %rd1;\n"
    "  mul.wide.u32 %rd3, %r2, 4;\n"
    "  add.s64 %rd2, %rd2, %rd3;\n"
    "  st.global.u32 [%rd2], %r3;\n"
    "  ret;\n"
    "}\n";

#define T 64

static CUlaunchAttribute attr(unsigned id) {
    CUlaunchAttribute a;
    memset(&a, 0, sizeof a);
    a.id = id;
    return a;
}

static CUlaunchConfig config(CUstream s, CUlaunchAttribute *attrs, unsigned n) {
    CUlaunchConfig c = {1, 1, 1, T, 1, 1, 0, s, attrs, n};
    return c;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    open_test_lib(argv[1]);
    FN(CUresult, cuInit, (unsigned));
    FN(CUresult, cuDeviceGetAttribute, (int *, int, CUdevice));
    FN(CUresult, cuCtxCreate_v2, (CUcontext *, unsigned, CUdevice));
    FN(CUresult, cuCtxSynchronize, (void));
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemsetD32_v2, (CUdeviceptr, unsigned, size_t));
    FN(CUresult, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t));
    FN(CUresult, cuModuleLoadData, (CUmodule *, const void *));
    FN(CUresult, cuModuleGetFunction, (CUfunction *, CUmodule, const char *));
    FN(CUresult, cuLaunchKernelEx, (const CUlaunchConfig *, CUfunction, void **, void **));
    FN(CUresult, cuEventCreate, (CUevent *, unsigned));
    FN(CUresult, cuEventQuery, (CUevent));
    FN(CUresult, cuEventRecord, (CUevent, CUstream));
    FN(CUresult, cuStreamWaitEvent, (CUstream, CUevent, unsigned));
    FN(CUresult, cuStreamIsCapturing, (CUstream, int *));
    FN(CUresult, cuStreamCreate, (CUstream *, unsigned));
    FN(CUresult, cuStreamSynchronize, (CUstream));
    FN(CUresult, cuStreamBeginCapture_v2, (CUstream, int));
    FN(CUresult, cuStreamEndCapture, (CUstream, CUgraph *));
    FN(CUresult, cuGraphInstantiateWithFlags, (CUgraphExec *, CUgraph, unsigned long long));
    FN(CUresult, cuGraphLaunch, (CUgraphExec, CUstream));
    FN(CUresult, cuGraphDestroy, (CUgraph));
    FN(CUresult, cuGraphExecUpdate_v2, (CUgraphExec, CUgraph, void *));
    FN(CUresult, cuOccupancyMaxActiveBlocksPerMultiprocessor, (int *, CUfunction, int, size_t));
    FN(CUresult, cuOccupancyAvailableDynamicSMemPerBlock, (size_t *, CUfunction, int, int));
    FN(CUresult, cuOccupancyMaxActiveClusters, (int *, CUfunction, const CUlaunchConfig *));
    FN(CUresult, cuOccupancyMaxPotentialClusterSize, (int *, CUfunction, const CUlaunchConfig *));
    FN(CUresult, cuTensorMapEncodeTiled,
       (CUtensorMap *, int, unsigned, void *, const unsigned long long *,
        const unsigned long long *, const unsigned *, const unsigned *, int, int, int, int));
    FN(CUresult, cuTensorMapEncodeIm2col,
       (CUtensorMap *, int, unsigned, void *, const unsigned long long *,
        const unsigned long long *, const int *, const int *, unsigned, unsigned, const unsigned *,
        int, int, int, int));
    FN(CUresult, cuTensorMapReplaceAddress, (CUtensorMap *, void *));

    CUdevice dev = 0;
    CUcontext ctx;
    CUmodule mod;
    CUfunction f;
    if (cuInit(0) || cuCtxCreate_v2(&ctx, 0, dev) || cuModuleLoadData(&mod, PTX) ||
        cuModuleGetFunction(&f, mod, "fill")) {
        printf("FAIL setup\n");
        return 1;
    }
    CUdeviceptr out;
    EXPECT_RC(cuMemAlloc_v2(&out, T * 4), 0, "alloc");
    unsigned v = 0;
    void *args[] = {&out, &v};
    unsigned host[T];
    /* Whether the last launch wrote v + i (1) or left the zeros (0). */
#define RAN()                                                                                      \
    (cuMemcpyDtoH_v2(host, out, sizeof host) == 0 && host[0] == v && host[T - 1] == v + T - 1)
#define RESET() cuMemsetD32_v2(out, 0, T)

    /* ---- direct launches: every attribute reaches the host's driver ---- */
    CUevent quiet, timed;
    EXPECT_RC(cuEventCreate(&quiet, EVENT_DISABLE_TIMING), 0, "event");
    EXPECT_RC(cuEventCreate(&timed, 0), 0, "timed event");
    CUlaunchAttribute ok[5] = {attr(ATTR_PRIORITY), attr(ATTR_CLUSTER_DIMENSION),
                               attr(ATTR_LAUNCH_COMPLETION_EVENT),
                               attr(ATTR_ACCESS_POLICY_WINDOW), attr(ATTR_COOPERATIVE)};
    ok[0].value.priority = -1;
    ok[1].value.clusterDim.x = ok[1].value.clusterDim.y = ok[1].value.clusterDim.z = 1;
    ok[2].value.completion.event = quiet;
    ok[3].value.window.base_ptr = (void *)(uintptr_t)out;
    ok[3].value.window.num_bytes = T * 4;
    ok[3].value.window.hitRatio = 0.5f;
    ok[4].value.cooperative = 1;
    CUlaunchConfig c = config(NULL, ok, 5);
    v = 100;
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), 0, "ex: accepted attributes");
    EXPECT_RC(cuCtxSynchronize(), 0, "ex: accepted attributes sync");
    expect(RAN(), "ex: accepted attributes ran", "host[0] %lld, v %lld", host[0], v);
    EXPECT_RC(cuEventQuery(quiet), 0, "ex: completion event recorded");

    /* Refused by the host's driver (the software GPU runs clusters of one
     * block only: NOT_SUPPORTED), reported as a launch failure at the next
     * synchronization: the attribute was not dropped. */
    CUlaunchAttribute two = attr(ATTR_CLUSTER_DIMENSION);
    two.value.clusterDim.x = 2;
    two.value.clusterDim.y = two.value.clusterDim.z = 1;
    c = config(NULL, &two, 1);
    v = 200;
    RESET();
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), 0, "ex: cluster of 2 queued");
    EXPECT_RC(cuCtxSynchronize(), NOT_SUPPORTED, "ex: cluster of 2 refused by the host");
    expect(!RAN(), "ex: cluster of 2 did not run", "host[0] %lld, v %lld", host[0], v);
    /* A stream attribute in a launch: the driver's INVALID_VALUE. */
    CUlaunchAttribute sync_policy = attr(ATTR_SYNCHRONIZATION_POLICY);
    sync_policy.value.syncPolicy = 1;
    c = config(NULL, &sync_policy, 1);
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), 0, "ex: sync policy queued");
    EXPECT_RC(cuCtxSynchronize(), INVALID_VALUE, "ex: sync policy refused by the host");
    /* Refused at the call (cuda.h): a timing event, an unknown id, NULL. */
    CUlaunchAttribute bad = attr(ATTR_LAUNCH_COMPLETION_EVENT);
    bad.value.completion.event = timed;
    c = config(NULL, &bad, 1);
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), INVALID_VALUE, "ex: timing event");
    bad = attr(15);
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), INVALID_VALUE, "ex: unknown attribute");
    bad = attr(ATTR_LAUNCH_COMPLETION_EVENT);
    bad.value.completion.event = (CUevent)(uintptr_t)0x77;
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), INVALID_HANDLE, "ex: unknown event");
    c = config(NULL, NULL, 1);
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), INVALID_VALUE, "ex: NULL attributes");
    EXPECT_RC(cuCtxSynchronize(), 0, "ex: nothing pending");

    /* ---- captured launches: the kernel node keeps the attributes ---- */
    CUstream s;
    CUgraph g;
    CUgraphExec e;
    EXPECT_RC(cuStreamCreate(&s, 0), 0, "stream");
    c = config(s, ok, 5);
    EXPECT_RC(cuStreamBeginCapture_v2(s, CAPTURE_RELAXED), 0, "capture: begin");
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), 0, "capture: launch");
    /* The completion event is recorded in the capture: a stream waiting
     * for it joins the capture (and joins back through another event). */
    CUstream s2;
    CUevent back;
    int status = -1;
    EXPECT_RC(cuStreamCreate(&s2, 0), 0, "stream 2");
    EXPECT_RC(cuEventCreate(&back, EVENT_DISABLE_TIMING), 0, "event 2");
    EXPECT_RC(cuStreamWaitEvent(s2, quiet, 0), 0, "capture: wait for the completion event");
    EXPECT_RC(cuStreamIsCapturing(s2, &status), 0, "capture: is capturing");
    expect(status == CAPTURE_STATUS_ACTIVE, "capture: the completion event forked a stream",
           "status %lld, wanted %lld", status, CAPTURE_STATUS_ACTIVE);
    EXPECT_RC(cuEventRecord(back, s2), 0, "capture: record on the fork");
    EXPECT_RC(cuStreamWaitEvent(s, back, 0), 0, "capture: join");
    EXPECT_RC(cuStreamEndCapture(s, &g), 0, "capture: end");
    EXPECT_RC(cuGraphInstantiateWithFlags(&e, g, 0), 0, "capture: instantiate");
    v = 300; /* the node copied v = 200 */
    RESET();
    EXPECT_RC(cuGraphLaunch(e, s), 0, "capture: launch graph");
    EXPECT_RC(cuStreamSynchronize(s), 0, "capture: sync");
    v = 200;
    expect(RAN(), "capture: graph ran", "host[0] %lld, v %lld", host[0], v);
    cuGraphDestroy(g);
    /* cuGraphExecUpdate: other arguments with the same attributes update
     * the executable graph; other attributes cannot (the host's graph keeps
     * those it was instantiated with). */
    struct {
        int result;
        void *errorNode, *errorFromNode;
    } info;
    v = 400;
    EXPECT_RC(cuStreamBeginCapture_v2(s, CAPTURE_RELAXED), 0, "recapture: begin");
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), 0, "recapture: launch");
    EXPECT_RC(cuStreamEndCapture(s, &g), 0, "recapture: end");
    EXPECT_RC(cuGraphExecUpdate_v2(e, g, &info), 0, "update: same attributes");
    RESET();
    EXPECT_RC(cuGraphLaunch(e, s), 0, "update: launch");
    EXPECT_RC(cuStreamSynchronize(s), 0, "update: sync");
    expect(RAN(), "update: the new argument ran", "host[0] %lld, v %lld", host[0], v);
    cuGraphDestroy(g);
    ok[0].value.priority = -2;
    EXPECT_RC(cuStreamBeginCapture_v2(s, CAPTURE_RELAXED), 0, "recapture 2: begin");
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), 0, "recapture 2: launch");
    EXPECT_RC(cuStreamEndCapture(s, &g), 0, "recapture 2: end");
    EXPECT_RC(cuGraphExecUpdate_v2(e, g, &info), GRAPH_EXEC_UPDATE_FAILURE,
              "update: other attributes");
    expect(info.result == UPDATE_ERROR_ATTRIBUTES_CHANGED, "update: attributes changed",
           "result %lld, wanted %lld", info.result, UPDATE_ERROR_ATTRIBUTES_CHANGED);
    cuGraphDestroy(g);
    v = 200;
    /* A cluster of two blocks in a node: refused by the host's driver when
     * the graph is built there. */
    c = config(s, &two, 1);
    EXPECT_RC(cuStreamBeginCapture_v2(s, CAPTURE_RELAXED), 0, "capture 2: begin");
    EXPECT_RC(cuLaunchKernelEx(&c, f, args, NULL), 0, "capture 2: launch");
    EXPECT_RC(cuStreamEndCapture(s, &g), 0, "capture 2: end");
    EXPECT_RC(cuGraphInstantiateWithFlags(&e, g, 0), NOT_SUPPORTED,
              "capture 2: the node's cluster refused");
    cuGraphDestroy(g);

    /* ---- occupancy (cublasCreate asks these) ---- */
    int optin = 0, per_sm_smem = 0, reserved = 0, sms = 0;
    cuDeviceGetAttribute(&optin, 97, dev);        /* MAX_SHARED_MEMORY_PER_BLOCK_OPTIN */
    cuDeviceGetAttribute(&per_sm_smem, 81, dev);  /* MAX_SHARED_MEMORY_PER_MULTIPROCESSOR */
    cuDeviceGetAttribute(&reserved, 111, dev);    /* RESERVED_SHARED_MEMORY_PER_BLOCK */
    cuDeviceGetAttribute(&sms, 16, dev);          /* MULTIPROCESSOR_COUNT */
    size_t avail = 0;
    EXPECT_RC(cuOccupancyAvailableDynamicSMemPerBlock(&avail, f, 1, T), 0, "smem: 1 block");
    expect((long long)avail == optin, "smem: 1 block gets the opt-in maximum",
           "got %lld, wanted %lld", (long long)avail, optin);
    long long two_blocks = per_sm_smem / 2 - reserved;
    if (two_blocks > optin) two_blocks = optin;
    EXPECT_RC(cuOccupancyAvailableDynamicSMemPerBlock(&avail, f, 2, T), 0, "smem: 2 blocks");
    expect((long long)avail == two_blocks, "smem: 2 blocks share the SM", "got %lld, wanted %lld",
           (long long)avail, two_blocks);
    EXPECT_RC(cuOccupancyAvailableDynamicSMemPerBlock(NULL, f, 1, T), INVALID_VALUE, "smem: NULL");
    EXPECT_RC(cuOccupancyAvailableDynamicSMemPerBlock(&avail, (CUfunction)(uintptr_t)0x99, 1, T),
              INVALID_HANDLE, "smem: unknown function");

    int per_sm = 0, clusters = -1, size = -1;
    cuOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f, T, 0);
    CUlaunchAttribute one = attr(ATTR_CLUSTER_DIMENSION);
    one.value.clusterDim.x = one.value.clusterDim.y = one.value.clusterDim.z = 1;
    c = config(NULL, &one, 1);
    EXPECT_RC(cuOccupancyMaxActiveClusters(&clusters, f, &c), 0, "clusters: of one block");
    expect(clusters == per_sm * sms, "clusters: a cluster of one block is a block",
           "got %lld, wanted %lld", clusters, (long long)per_sm * sms);
    c = config(NULL, &two, 1);
    EXPECT_RC(cuOccupancyMaxActiveClusters(&clusters, f, &c), 0, "clusters: of two blocks");
    /* The software GPU never runs them. */
    expect(clusters == 0, "clusters: none of two blocks fit", "got %lld, wanted %lld", clusters, 0);
    c = config(NULL, NULL, 0);
    EXPECT_RC(cuOccupancyMaxActiveClusters(&clusters, f, &c), INVALID_CLUSTER_SIZE,
              "clusters: no cluster size");
    EXPECT_RC(cuOccupancyMaxPotentialClusterSize(&size, f, &c), 0, "cluster size");
    expect(size == 1, "cluster size: one block on the software GPU", "got %lld, wanted %lld", size, 1);
    EXPECT_RC(cuOccupancyMaxActiveClusters(&clusters, f, NULL), INVALID_VALUE, "clusters: NULL");

    /* ---- tensor maps: encoded by the host, the bytes come back ---- */
    CUdeviceptr t0, t1;
    EXPECT_RC(cuMemAlloc_v2(&t0, 64 * 32 * 4), 0, "tensor: alloc");
    EXPECT_RC(cuMemAlloc_v2(&t1, 64 * 32 * 4), 0, "tensor: alloc 2");
    unsigned long long dims[2] = {64, 32}, strides[1] = {64 * 4};
    unsigned box[2] = {16, 8}, estr[2] = {1, 1};
    CUtensorMap m;
    memset(&m, 0, sizeof m);
    /* FLOAT32 = 7. */
    EXPECT_RC(cuTensorMapEncodeTiled(&m, 7, 2, (void *)(uintptr_t)t0, dims, strides, box, estr, 0,
                                     0, 0, 0),
              0, "tensor: tiled");
    /* The software GPU's documented layout (crates/vgpu-emu/src/tensormap.rs):
     * word 0 "VTMA", kind 1 (tiled), rank; word 1 the address; 2.. dims. */
    unsigned long long w0 = m.opaque[0];
    expect((w0 & 0xffffffffu) == 0x414d5456u && ((w0 >> 32) & 0xff) == 1 && ((w0 >> 40) & 0xf) == 2,
           "tensor: tiled descriptor", "word 0 %#llx, rank %lld", (long long)w0,
           (long long)((w0 >> 40) & 0xf));
    expect(m.opaque[1] == t0 && m.opaque[2] == 64 && m.opaque[3] == 32, "tensor: address and dims",
           "address %#llx, dim0 %lld", (long long)m.opaque[1], (long long)m.opaque[2]);
    CUtensorMap moved = m;
    EXPECT_RC(cuTensorMapReplaceAddress(&moved, (void *)(uintptr_t)t1), 0, "tensor: replace");
    expect(moved.opaque[1] == t1 && moved.opaque[0] == m.opaque[0] && moved.opaque[2] == 64,
           "tensor: replaced address", "address %#llx, wanted %#llx", (long long)moved.opaque[1],
           (long long)t1);
    CUtensorMap unknown;
    memset(&unknown, 0, sizeof unknown);
    EXPECT_RC(cuTensorMapReplaceAddress(&unknown, (void *)(uintptr_t)t1), INVALID_VALUE,
              "tensor: replace in a descriptor the session did not encode");
    EXPECT_RC(cuTensorMapEncodeTiled(&m, 7, 2, (void *)(uintptr_t)0x10000, dims, strides, box,
                                     estr, 0, 0, 0, 0),
              INVALID_VALUE, "tensor: memory outside the session");
    EXPECT_RC(cuTensorMapEncodeTiled(&m, 7, 6, (void *)(uintptr_t)t0, dims, strides, box, estr, 0,
                                     0, 0, 0),
              INVALID_VALUE, "tensor: rank 6");
    EXPECT_RC(cuTensorMapEncodeTiled(&m, 7, 2, (void *)(uintptr_t)t0, NULL, strides, box, estr, 0,
                                     0, 0, 0),
              INVALID_VALUE, "tensor: NULL dims");
    EXPECT_RC(cuTensorMapEncodeTiled(NULL, 7, 2, (void *)(uintptr_t)t0, dims, strides, box, estr,
                                     0, 0, 0, 0),
              INVALID_VALUE, "tensor: NULL map");
    /* NHWC, 8 channels of 4x4 pixels, 2 images. */
    unsigned long long idims[4] = {8, 4, 4, 2}, istr[3] = {8 * 4, 8 * 4 * 4, 8 * 4 * 4 * 4};
    int lower[2] = {0, 0}, upper[2] = {-1, -1};
    unsigned iestr[4] = {1, 1, 1, 1};
    CUtensorMap im;
    EXPECT_RC(cuTensorMapEncodeIm2col(&im, 7, 4, (void *)(uintptr_t)t0, idims, istr, lower, upper,
                                      8, 4, iestr, 0, 0, 0, 0),
              0, "tensor: im2col");
    expect(((im.opaque[0] >> 32) & 0xff) == 2 && im.opaque[1] == t0, "tensor: im2col descriptor",
           "word 0 %#llx, address %#llx", (long long)im.opaque[0], (long long)im.opaque[1]);
    EXPECT_RC(cuTensorMapEncodeIm2col(&im, 7, 2, (void *)(uintptr_t)t0, idims, istr, lower, upper,
                                      8, 4, iestr, 0, 0, 0, 0),
              INVALID_VALUE, "tensor: im2col of rank 2");

    printf("done failures=%d\n", test_failures);
    return test_failures ? 1 : 0;
}
