/* cudabench: the measurements and failure cases of scripts/gpu-check.sh, on
 * the CUDA driver API alone. It dlopens libcuda.so.1, so no CUDA toolkit is
 * needed to build or run it, and the same binary runs natively (NVIDIA's
 * library) and as a vgpu guest (the shim first on LD_LIBRARY_PATH). Kernels
 * are hand-written PTX, JIT-compiled by whichever driver serves the program.
 *
 *   cudabench info
 *   cudabench copy MIB REPS        H2D/D2H, pageable and pinned, best of REPS
 *   cudabench launch N             launch rate of a one-thread kernel
 *   cudabench graph REPLAYS        a 256-kernel graph, captured from a stream
 *   cudabench bwtest BYTES ITERS   cuda-samples bandwidthTest style, event-timed
 *   cudabench oob                  an out-of-bounds store: sticky 700 expected
 *   cudabench smoke                small copy and kernel, result checked
 *   cudabench spin NS MIB          holds MIB of device memory, runs a kernel
 *                                  for NS ns (0: forever) and synchronizes
 *   cudabench hold                 cuInit, then sleeps until killed (keeps an
 *                                  un-persisted driver initialized)
 *
 * Output, one fact per line, read by gpu-check.sh:
 *   figure NAME UNIT VALUE   a measurement (always a rate: higher is better)
 *   check NAME VALUE         a result that must equal the native run's
 *   skip NAME REASON         the measurement cannot run here, and why
 *   error NAME REASON        something failed (the exit status is then 1)
 * Every mode also verifies its own results against values computed on the
 * CPU and reports a mismatch as an error. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext, *CUmodule, *CUfunction, *CUstream, *CUevent, *CUgraph, *CUgraphExec,
    *CUgraphNode;

/* Values from NVIDIA's cuda.h (the driver's ABI). */
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    ATTR_SM_COUNT = 16,
    ATTR_CC_MAJOR = 75,
    ATTR_CC_MINOR = 76,
    STREAM_NON_BLOCKING = 1,
    CAPTURE_MODE_GLOBAL = 0,
};

/* The driver entry points used, by their exported (versioned) names. */
#define CU_FUNCTIONS(X)                                                                          \
    X(cuInit, "cuInit", (unsigned))                                                              \
    X(cuDriverGetVersion, "cuDriverGetVersion", (int *))                                         \
    X(cuGetErrorName, "cuGetErrorName", (CUresult, const char **))                               \
    X(cuDeviceGet, "cuDeviceGet", (CUdevice *, int))                                             \
    X(cuDeviceGetName, "cuDeviceGetName", (char *, int, CUdevice))                               \
    X(cuDeviceGetAttribute, "cuDeviceGetAttribute", (int *, int, CUdevice))                      \
    X(cuDeviceTotalMem, "cuDeviceTotalMem_v2", (size_t *, CUdevice))                             \
    X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", (CUcontext *, CUdevice))             \
    X(cuCtxSetCurrent, "cuCtxSetCurrent", (CUcontext))                                           \
    X(cuCtxSynchronize, "cuCtxSynchronize", (void))                                              \
    X(cuMemAlloc, "cuMemAlloc_v2", (CUdeviceptr *, size_t))                                      \
    X(cuMemFree, "cuMemFree_v2", (CUdeviceptr))                                                  \
    X(cuMemAllocHost, "cuMemAllocHost_v2", (void **, size_t))                                    \
    X(cuMemFreeHost, "cuMemFreeHost", (void *))                                                  \
    X(cuMemsetD32, "cuMemsetD32_v2", (CUdeviceptr, unsigned, size_t))                            \
    X(cuMemcpyHtoD, "cuMemcpyHtoD_v2", (CUdeviceptr, const void *, size_t))                      \
    X(cuMemcpyDtoH, "cuMemcpyDtoH_v2", (void *, CUdeviceptr, size_t))                            \
    X(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", (CUdeviceptr, const void *, size_t, CUstream))  \
    X(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", (void *, CUdeviceptr, size_t, CUstream))        \
    X(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", (CUdeviceptr, CUdeviceptr, size_t, CUstream))   \
    X(cuModuleLoadData, "cuModuleLoadData", (CUmodule *, const void *))                          \
    X(cuModuleGetFunction, "cuModuleGetFunction", (CUfunction *, CUmodule, const char *))        \
    X(cuLaunchKernel, "cuLaunchKernel",                                                          \
      (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,         \
       CUstream, void **, void **))                                                              \
    X(cuStreamCreate, "cuStreamCreate", (CUstream *, unsigned))                                  \
    X(cuStreamSynchronize, "cuStreamSynchronize", (CUstream))                                    \
    X(cuEventCreate, "cuEventCreate", (CUevent *, unsigned))                                     \
    X(cuEventRecord, "cuEventRecord", (CUevent, CUstream))                                       \
    X(cuEventSynchronize, "cuEventSynchronize", (CUevent))                                       \
    X(cuStreamBeginCapture, "cuStreamBeginCapture_v2", (CUstream, int))                          \
    X(cuStreamEndCapture, "cuStreamEndCapture", (CUstream, CUgraph *))                           \
    X(cuGraphGetNodes, "cuGraphGetNodes", (CUgraph, CUgraphNode *, size_t *))                    \
    X(cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags",                                \
      (CUgraphExec *, CUgraph, unsigned long long))                                              \
    X(cuGraphLaunch, "cuGraphLaunch", (CUgraphExec, CUstream))

#define DECLARE(fn, sym, args) static CUresult(*fn) args;
CU_FUNCTIONS(DECLARE)
/* cuEventElapsedTime_v2 (CUDA 12.8+) where the driver has it, else the original. */
static CUresult (*elapsed_v2)(float *, CUevent, CUevent), (*elapsed_v1)(float *, CUevent, CUevent);

static const char *mode = "?";
static CUdevice dev;

static void out(const char *kind, const char *name, const char *fmt, ...) {
    va_list ap;
    printf("%s %s ", kind, name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static const char *err_name(CUresult r) {
    const char *s = NULL;
    if (!cuGetErrorName || cuGetErrorName(r, &s) != CUDA_SUCCESS || !s) return "?";
    return s;
}

/* Any failure of a call the measurement needs ends the program. */
#define CK(call)                                                                                 \
    do {                                                                                         \
        CUresult r_ = (call);                                                                    \
        if (r_ != CUDA_SUCCESS) {                                                                \
            out("error", mode, "%s returned %d (%s) at line %d", #call, r_, err_name(r_),       \
                __LINE__);                                                                       \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

static void fail(const char *what, const char *detail) {
    out("error", mode, "%s: %s", what, detail);
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void load_driver(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) fail("dlopen libcuda.so.1", dlerror());
#define RESOLVE(fn, sym, args)                                                                   \
    *(void **)&fn = dlsym(lib, sym);                                                             \
    if (!fn) fail("dlsym", sym);
    CU_FUNCTIONS(RESOLVE)
    *(void **)&elapsed_v2 = dlsym(lib, "cuEventElapsedTime_v2");
    *(void **)&elapsed_v1 = dlsym(lib, "cuEventElapsedTime");
    if (!elapsed_v1 && !elapsed_v2) fail("dlsym", "cuEventElapsedTime");
}

static CUresult event_ms(float *ms, CUevent a, CUevent b) {
    CUresult r = elapsed_v2 ? elapsed_v2(ms, a, b) : CUDA_ERROR_NOT_SUPPORTED;
    if (r == CUDA_ERROR_NOT_SUPPORTED && elapsed_v1) r = elapsed_v1(ms, a, b);
    return r;
}

static void init_context(void) {
    CUcontext ctx;
    CK(cuInit(0));
    CK(cuDeviceGet(&dev, 0));
    CK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CK(cuCtxSetCurrent(ctx));
}

/* The kernels. sm_50 PTX runs on every GPU a current driver supports (the
 * driver JIT-compiles it) and on vgpu's software GPU. */
static const char PTX[] =
    ".version 7.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    /* add(p, v): one thread adds v to *p. With v = 1 it is the launch-rate
     * kernel: as good as empty, yet its count proves every launch ran. */
    ".visible .entry add(.param .u64 p, .param .u32 v)\n"
    "{\n"
    "  .reg .b32 %r<2>;\n"
    "  .reg .b64 %rd<3>;\n"
    "  ld.param.u64 %rd1, [p];\n"
    "  ld.param.u32 %r1, [v];\n"
    "  cvta.to.global.u64 %rd2, %rd1;\n"
    "  red.global.add.u32 [%rd2], %r1;\n"
    "  ret;\n"
    "}\n"
    /* store(p): writes 1 at p, wherever that is. */
    ".visible .entry store(.param .u64 p)\n"
    "{\n"
    "  .reg .b32 %r<2>;\n"
    "  .reg .b64 %rd<2>;\n"
    "  ld.param.u64 %rd1, [p];\n"
    "  mov.u32 %r1, 1;\n"
    "  st.global.u32 [%rd1], %r1;\n"
    "  ret;\n"
    "}\n"
    /* spin(ns): busy for ns nanoseconds of %globaltimer; the timer is
     * volatile, so ptxas cannot fold the loop away. */
    ".visible .entry spin(.param .u64 ns)\n"
    "{\n"
    "  .reg .pred %p<2>;\n"
    "  .reg .b64 %rd<5>;\n"
    "  ld.param.u64 %rd1, [ns];\n"
    "  mov.u64 %rd2, %globaltimer;\n"
    "LOOP:\n"
    "  mov.u64 %rd3, %globaltimer;\n"
    "  sub.u64 %rd4, %rd3, %rd2;\n"
    "  setp.lt.u64 %p1, %rd4, %rd1;\n"
    "  @%p1 bra LOOP;\n"
    "  ret;\n"
    "}\n";

static CUfunction kernel(const char *name) {
    static CUmodule mod;
    CUfunction f;
    if (!mod) CK(cuModuleLoadData(&mod, PTX));
    CK(cuModuleGetFunction(&f, mod, name));
    return f;
}

static void launch1(CUfunction f, CUstream s, void **params) {
    CK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
}

/* A pattern no two runs of a buggy copy would reproduce by accident. */
static void fill(void *buf, size_t bytes, uint64_t seed) {
    uint64_t *w = buf;
    for (size_t i = 0; i < bytes / 8; i++) w[i] = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
}

/* FNV-1a over every 4096th word: a stable summary for comparing runs. */
static uint64_t digest(const void *buf, size_t bytes) {
    const uint64_t *w = buf;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < bytes / 8; i += 512) {
        h ^= w[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void expect_same(const void *got, const void *want, size_t bytes, const char *what) {
    if (memcmp(got, want, bytes) != 0) fail(what, "data differs from what was sent");
}

/* ------------------------------------------------------------------ modes */

static int do_info(void) {
    char name[256] = {0};
    int version = 0, major = 0, minor = 0, sms = 0;
    size_t total = 0;
    CK(cuInit(0));
    CK(cuDriverGetVersion(&version));
    CK(cuDeviceGet(&dev, 0));
    CK(cuDeviceGetName(name, sizeof name - 1, dev));
    CK(cuDeviceGetAttribute(&major, ATTR_CC_MAJOR, dev));
    CK(cuDeviceGetAttribute(&minor, ATTR_CC_MINOR, dev));
    CK(cuDeviceGetAttribute(&sms, ATTR_SM_COUNT, dev));
    CK(cuDeviceTotalMem(&total, dev));
    out("check", "name", "%s", name);
    out("check", "compute-capability", "%d.%d", major, minor);
    out("check", "multiprocessors", "%d", sms);
    out("check", "memory-mib", "%zu", total >> 20);
    out("info", "cuda-driver-version", "%d", version);
    return 0;
}

/* Synchronous copies of one buffer, best of REPS, in GB/s (1e9 bytes). */
static double best_rate(CUresult (*copy)(void), size_t bytes, int reps) {
    double best = 0;
    for (int i = 0; i < reps; i++) {
        double t = now();
        CK(copy());
        double rate = (double)bytes / (now() - t) / 1e9;
        if (rate > best) best = rate;
    }
    return best;
}

static CUdeviceptr c_dev;
static void *c_src, *c_dst;
static size_t c_bytes;
static CUresult c_h2d(void) { return cuMemcpyHtoD(c_dev, c_src, c_bytes); }
static CUresult c_d2h(void) { return cuMemcpyDtoH(c_dst, c_dev, c_bytes); }

static int do_copy(size_t mib, int reps) {
    init_context();
    c_bytes = mib << 20;
    CK(cuMemAlloc(&c_dev, c_bytes));
    static const char *const kinds[2] = {"pageable", "pinned"};
    char name[64];
    uint64_t sum = 0;
    for (int pinned = 0; pinned < 2; pinned++) {
        void *src, *dst;
        if (pinned) {
            CK(cuMemAllocHost(&src, c_bytes));
            CK(cuMemAllocHost(&dst, c_bytes));
        } else {
            src = malloc(c_bytes);
            dst = malloc(c_bytes);
            if (!src || !dst) fail("malloc", "out of host memory");
        }
        fill(src, c_bytes, 0x5eed0000u + (unsigned)pinned);
        memset(dst, 0, c_bytes); /* page faults happen here, not in the copies */
        c_src = src;
        c_dst = dst;
        double h2d = best_rate(c_h2d, c_bytes, reps);
        double d2h = best_rate(c_d2h, c_bytes, reps);
        expect_same(dst, src, c_bytes, kinds[pinned]);
        snprintf(name, sizeof name, "h2d-%s-%zumib", kinds[pinned], mib);
        out("figure", name, "GB/s %.2f", h2d);
        snprintf(name, sizeof name, "d2h-%s-%zumib", kinds[pinned], mib);
        out("figure", name, "GB/s %.2f", d2h);
        sum ^= digest(dst, c_bytes);
        if (pinned) {
            CK(cuMemFreeHost(src));
            CK(cuMemFreeHost(dst));
        } else {
            free(src);
            free(dst);
        }
    }
    out("check", "copy-digest", "%016llx", (unsigned long long)sum);
    CK(cuMemFree(c_dev));
    return 0;
}

static unsigned read_counter(CUdeviceptr p) {
    unsigned v = 0;
    CK(cuMemcpyDtoH(&v, p, sizeof v));
    return v;
}

static int do_launch(unsigned n) {
    init_context();
    CUfunction f = kernel("add");
    CUdeviceptr counter;
    unsigned one = 1;
    CK(cuMemAlloc(&counter, 4));
    CK(cuMemsetD32(counter, 0, 1));
    void *params[] = {&counter, &one};
    const unsigned warm = 100;
    for (unsigned i = 0; i < warm; i++) launch1(f, NULL, params);
    CK(cuCtxSynchronize());
    double t = now();
    for (unsigned i = 0; i < n; i++) launch1(f, NULL, params);
    CK(cuCtxSynchronize());
    double dt = now() - t;
    unsigned got = read_counter(counter);
    if (got != n + warm) fail("counter", "a launch did not run");
    out("figure", "launch-rate", "launches/s %.0f", n / dt);
    out("check", "launch-count", "%u", got);
    return 0;
}

static int do_graph(unsigned replays) {
    enum { NODES = 256 };
    init_context();
    CUfunction f = kernel("add");
    CUdeviceptr counter;
    CUstream s;
    CK(cuMemAlloc(&counter, 4));
    CK(cuMemsetD32(counter, 0, 1));
    CK(cuStreamCreate(&s, STREAM_NON_BLOCKING));
    /* A graph call the driver (or vgpu) refuses is a skip, not a failure:
     * the figure does not exist here, and the reason says why. */
#define GK(call)                                                                                 \
    do {                                                                                         \
        CUresult r_ = (call);                                                                    \
        if (r_ != CUDA_SUCCESS) {                                                                \
            out("skip", "graph-256", "%s returned %d (%s)", #call, r_, err_name(r_));           \
            return 0;                                                                            \
        }                                                                                        \
    } while (0)
    GK(cuStreamBeginCapture(s, CAPTURE_MODE_GLOBAL));
    unsigned values[NODES];
    for (unsigned i = 0; i < NODES; i++) {
        values[i] = i + 1; /* each node its own argument: captured by value */
        void *params[] = {&counter, &values[i]};
        GK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, params, NULL));
    }
    CUgraph graph;
    CUgraphExec exec;
    size_t nodes = 0;
    GK(cuStreamEndCapture(s, &graph));
    GK(cuGraphGetNodes(graph, NULL, &nodes));
    if (nodes != NODES) fail("graph", "capture did not record 256 kernel nodes");
    GK(cuGraphInstantiateWithFlags(&exec, graph, 0));
    GK(cuGraphLaunch(exec, s));
    CK(cuStreamSynchronize(s));
    double t = now();
    for (unsigned i = 0; i < replays; i++) GK(cuGraphLaunch(exec, s));
    CK(cuStreamSynchronize(s));
    double dt = now() - t;
    unsigned got = read_counter(counter);
    unsigned want = (replays + 1) * (NODES * (NODES + 1) / 2);
    if (got != want) fail("graph", "the counter is not what 256 kernels per replay give");
    out("figure", "graph-256", "kernels/s %.0f", (double)replays * NODES / dt);
    out("check", "graph-count", "%u", got);
    return 0;
}

/* cuda-samples' bandwidthTest, quick mode: pinned memory, ITERS
 * back-to-back asynchronous copies timed with events; device-to-device
 * counts each byte read and written. */
static int do_bwtest(size_t bytes, unsigned iters) {
    init_context();
    void *h, *back;
    CUdeviceptr d1, d2;
    CUevent start, stop;
    float ms;
    CK(cuMemAllocHost(&h, bytes));
    CK(cuMemAllocHost(&back, bytes));
    CK(cuMemAlloc(&d1, bytes));
    CK(cuMemAlloc(&d2, bytes));
    CK(cuEventCreate(&start, 0));
    CK(cuEventCreate(&stop, 0));
    fill(h, bytes, 0xb0b0);
    double gbs[3];
    for (int dir = 0; dir < 3; dir++) {
        CK(cuEventRecord(start, NULL));
        for (unsigned i = 0; i < iters; i++) {
            if (dir == 0) CK(cuMemcpyHtoDAsync(d1, h, bytes, NULL));
            if (dir == 1) CK(cuMemcpyDtoHAsync(back, d1, bytes, NULL));
            if (dir == 2) CK(cuMemcpyDtoDAsync(d2, d1, bytes, NULL));
        }
        CK(cuEventRecord(stop, NULL));
        CK(cuEventSynchronize(stop));
        CK(event_ms(&ms, start, stop));
        gbs[dir] = (dir == 2 ? 2.0 : 1.0) * (double)bytes * iters / 1e9 / (ms / 1e3);
    }
    expect_same(back, h, bytes, "bwtest device-to-host");
    memset(back, 0, bytes);
    CK(cuMemcpyDtoH(back, d2, bytes));
    expect_same(back, h, bytes, "bwtest device-to-device");
    out("figure", "bwtest-h2d", "GB/s %.2f", gbs[0]);
    out("figure", "bwtest-d2h", "GB/s %.2f", gbs[1]);
    out("figure", "bwtest-d2d", "GB/s %.2f", gbs[2]);
    out("check", "bwtest-digest", "%016llx", (unsigned long long)digest(back, bytes));
    return 0;
}

static int do_oob(void) {
    init_context();
    CUfunction f = kernel("store");
    CUdeviceptr buf, more;
    CK(cuMemAlloc(&buf, 4096));
    /* 1 TiB past a small allocation: mapped by nothing. */
    CUdeviceptr wild = buf + (1ull << 40);
    void *params[] = {&wild};
    CUresult at_launch = cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL);
    CUresult at_sync = cuCtxSynchronize();
    CUresult after = cuMemAlloc(&more, 4096);
    /* Only the launch's own result may differ between drivers: an error of
     * the kernel may be reported by the launch or by a later call. */
    out("info", "oob-launch", "%d", at_launch);
    out("check", "oob-sync", "%d", at_sync);
    out("check", "oob-after", "%d", after);
    /* The launch itself may already fail (asynchronous errors may surface at
     * any later call), but the context must end up with a sticky 700. */
    int ok = (at_launch == 0 || at_launch == 700) && at_sync == 700 && after == 700;
    if (!ok) fail("oob", "expected 700 (CUDA_ERROR_ILLEGAL_ADDRESS) at the sync and after it");
    return 0;
}

static int do_smoke(void) {
    init_context();
    CUfunction f = kernel("add");
    CUdeviceptr p;
    unsigned v = 41, host[1024], back[1024];
    for (unsigned i = 0; i < 1024; i++) host[i] = i * 7u;
    CK(cuMemAlloc(&p, sizeof host));
    CK(cuMemcpyHtoD(p, host, sizeof host));
    void *params[] = {&p, &v};
    launch1(f, NULL, params);
    CK(cuCtxSynchronize());
    CK(cuMemcpyDtoH(back, p, sizeof back));
    host[0] += v;
    expect_same(back, host, sizeof host, "smoke");
    out("check", "smoke", "ok");
    return 0;
}

static int do_spin(unsigned long long ns, size_t mib) {
    init_context();
    CUfunction f = kernel("spin");
    CUdeviceptr hold = 0;
    if (mib) {
        CK(cuMemAlloc(&hold, mib << 20));
        CK(cuMemsetD32(hold, 0x12345678u, (mib << 20) / 4)); /* really backed */
    }
    CK(cuCtxSynchronize());
    unsigned long long arg = ns ? ns : ~0ull;
    void *params[] = {&arg};
    launch1(f, NULL, params);
    out("info", "spin", "launched");
    CUresult r = cuCtxSynchronize();
    out("check", "spin-sync", "%d", r);
    return r == CUDA_SUCCESS ? 0 : 1;
}

static int do_hold(void) {
    CK(cuInit(0));
    out("info", "hold", "initialized");
    for (;;) pause();
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s info|copy|launch|graph|bwtest|oob|smoke|spin|hold ...\n",
                argv[0]);
        return 2;
    }
    mode = argv[1];
    unsigned long long a = argc > 2 ? strtoull(argv[2], NULL, 0) : 0;
    unsigned long long b = argc > 3 ? strtoull(argv[3], NULL, 0) : 0;
    load_driver();
    if (!strcmp(mode, "info")) return do_info();
    if (!strcmp(mode, "copy")) return do_copy(a ? a : 1024, b ? (int)b : 3);
    if (!strcmp(mode, "launch")) return do_launch(a ? (unsigned)a : 20000);
    if (!strcmp(mode, "graph")) return do_graph(a ? (unsigned)a : 100);
    if (!strcmp(mode, "bwtest")) return do_bwtest(a ? a : 32000000, b ? (unsigned)b : 100);
    if (!strcmp(mode, "oob")) return do_oob();
    if (!strcmp(mode, "smoke")) return do_smoke();
    if (!strcmp(mode, "spin")) return do_spin(a, b);
    if (!strcmp(mode, "hold")) return do_hold();
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
