/* The data plane end to end (tests/dataplane.rs): copies of every size
 * class in both directions, synchronous and stream-ordered, from pageable
 * and pinned memory; copies from several threads on their own streams; a
 * module image larger than a frame; and an endless large copy for a test
 * that kills its guest mid-transfer. Every byte is checked.
 *
 *   dataplane sizes        one line "sizes ok=1 n=N"
 *   dataplane threads      "threads ok=1"
 *   dataplane image MIB    "image ok=1"
 *   dataplane forever      copies 300 MiB back and forth until killed
 */
#include "vgpu_test.h"
#include <pthread.h>

typedef unsigned long long CUdeviceptr;
typedef void *CUstream;
typedef void *CUmodule;
typedef void *CUfunction;

static CUresult (*cuInit)(unsigned);
static CUresult (*cuDeviceGet)(CUdevice *, int);
static CUresult (*cuCtxCreate)(CUcontext *, unsigned, CUdevice);
static CUresult (*cuCtxSetCurrent)(CUcontext);
static CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*cuMemFree)(CUdeviceptr);
static CUresult (*cuMemAllocHost)(void **, size_t);
static CUresult (*cuMemFreeHost)(void *);
static CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
static CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
static CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
static CUresult (*cuMemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
static CUresult (*cuStreamCreate)(CUstream *, unsigned);
static CUresult (*cuStreamSynchronize)(CUstream);
static CUresult (*cuStreamDestroy)(CUstream);
static CUresult (*cuModuleLoadData)(CUmodule *, const void *);
static CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*cuModuleUnload)(CUmodule);
static CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  unsigned, unsigned, CUstream, void **, void **);
static CUresult (*cuCtxSynchronize)(void);

static CUcontext ctx;

/* Every entry point the program uses, or a failure naming it. */
#define GET(var, sym)                                                               \
    do {                                                                            \
        *(void **)&var = dlsym(cu, sym);                                            \
        if (!var)                                                                   \
            fail("required symbol %s not found", sym);                              \
    } while (0)

static void load(void) {
    void *cu = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cu)
        fail("dlopen libcuda.so.1: %s", dlerror());
    GET(cuInit, "cuInit");
    GET(cuDeviceGet, "cuDeviceGet");
    GET(cuCtxCreate, "cuCtxCreate_v2");
    GET(cuCtxSetCurrent, "cuCtxSetCurrent");
    GET(cuMemAlloc, "cuMemAlloc_v2");
    GET(cuMemFree, "cuMemFree_v2");
    GET(cuMemAllocHost, "cuMemAllocHost_v2");
    GET(cuMemFreeHost, "cuMemFreeHost");
    GET(cuMemcpyHtoD, "cuMemcpyHtoD_v2");
    GET(cuMemcpyDtoH, "cuMemcpyDtoH_v2");
    GET(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
    GET(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
    GET(cuStreamCreate, "cuStreamCreate");
    GET(cuStreamSynchronize, "cuStreamSynchronize");
    GET(cuStreamDestroy, "cuStreamDestroy_v2");
    GET(cuModuleLoadData, "cuModuleLoadData");
    GET(cuModuleGetFunction, "cuModuleGetFunction");
    GET(cuModuleUnload, "cuModuleUnload");
    GET(cuLaunchKernel, "cuLaunchKernel");
    GET(cuCtxSynchronize, "cuCtxSynchronize");
    CUdevice dev;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, 0, dev));
}

/* A pattern that differs per byte, per offset and per run. */
static void fill(unsigned char *p, size_t n, unsigned seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = (unsigned char)x;
    }
}

static void compare(const unsigned char *a, const unsigned char *b, size_t n, const char *what) {
    if (n && memcmp(a, b, n) != 0) {
        size_t i = 0;
        while (a[i] == b[i])
            i++;
        fail("%s: %zu bytes differ first at %zu (%02x != %02x)", what, n, i, a[i], b[i]);
    }
}

/* Round trip of n bytes: src -> device -> dst, sync or on `s`. */
static void round_trip(unsigned char *src, unsigned char *dst, size_t n, CUstream s, int async,
                       unsigned seed, const char *what) {
    CUdeviceptr d = 0;
    CHECK(cuMemAlloc(&d, n ? n : 1));
    fill(src, n, seed);
    memset(dst, 0xA5, n);
    if (async) {
        CHECK(cuMemcpyHtoDAsync(d, src, n, s));
        /* A pageable source may be reused once the call returns. */
        if (n)
            memset(src, 0, n);
        CHECK(cuMemcpyDtoHAsync(dst, d, n, s));
        CHECK(cuStreamSynchronize(s));
        fill(src, n, seed);
    } else {
        CHECK(cuMemcpyHtoD(d, src, n));
        CHECK(cuMemcpyDtoH(dst, d, n));
    }
    compare(src, dst, n, what);
    CHECK(cuMemFree(d));
}

#define MIB ((size_t)1 << 20)

static void sizes(void) {
    /* 8 MiB: a piece on the socket; 4 MiB: a slot of the shared region. */
    const size_t list[] = {0,           1,           3,           4097,        4 * MIB - 1,
                           4 * MIB,     4 * MIB + 1, 8 * MIB - 1, 8 * MIB,     8 * MIB + 1,
                           16 * MIB,    33 * MIB + 7, 300 * MIB};
    const size_t count = sizeof list / sizeof list[0];
    size_t max = list[count - 1];
    unsigned char *src = malloc(max), *dst = malloc(max), *psrc = NULL, *pdst = NULL;
    if (!src || !dst)
        fail("malloc");
    CHECK(cuMemAllocHost((void **)&psrc, max));
    CHECK(cuMemAllocHost((void **)&pdst, max));
    CUstream s;
    CHECK(cuStreamCreate(&s, 0));
    int n = 0;
    for (size_t i = 0; i < count; i++) {
        char what[96];
        for (int mode = 0; mode < 4; mode++) {
            int async = mode & 1, pinned = mode & 2;
            /* 300 MiB: both directions once each way per memory kind. */
            if (list[i] == 300 * MIB && async)
                continue;
            snprintf(what, sizeof what, "%zu bytes %s %s", list[i], async ? "async" : "sync",
                     pinned ? "pinned" : "pageable");
            round_trip(pinned ? psrc : src, pinned ? pdst : dst, list[i], s, async,
                       (unsigned)(i * 4 + mode), what);
            n++;
        }
    }
    CHECK(cuStreamDestroy(s));
    CHECK(cuMemFreeHost(psrc));
    CHECK(cuMemFreeHost(pdst));
    free(src), free(dst);
    printf("sizes ok=1 n=%d\n", n);
}

struct worker {
    int id;
    int failed;
};

static void *thread_main(void *arg) {
    struct worker *w = arg;
    CHECK(cuCtxSetCurrent(ctx));
    CUstream s;
    CHECK(cuStreamCreate(&s, 0));
    size_t n = 12 * MIB + (size_t)w->id * 4099;
    unsigned char *src = malloc(n), *dst = malloc(n);
    if (!src || !dst)
        fail("malloc");
    for (int round = 0; round < 4; round++) {
        char what[64];
        snprintf(what, sizeof what, "thread %d round %d", w->id, round);
        round_trip(src, dst, n, s, round & 1, (unsigned)(w->id * 16 + round), what);
    }
    CHECK(cuStreamDestroy(s));
    free(src), free(dst);
    return NULL;
}

static void threads(void) {
    enum { N = 4 };
    pthread_t t[N];
    struct worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.id = i};
        if (pthread_create(&t[i], NULL, thread_main, &w[i]))
            fail("pthread_create");
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    printf("threads ok=1\n");
}

static const char KERNEL_PTX[] =
    ".version 7.0\n"
    ".target sm_52\n"
    ".address_size 64\n"
    ".visible .entry stamp(.param .u64 p, .param .u32 v)\n"
    "{\n"
    "  .reg .b32 %r<4>; .reg .b64 %rd<5>;\n"
    "  ld.param.u64 %rd1, [p]; ld.param.u32 %r1, [v];\n"
    "  mov.u32 %r2, %tid.x; add.u32 %r3, %r1, %r2;\n"
    "  cvta.to.global.u64 %rd2, %rd1; mul.wide.u32 %rd3, %r2, 4; add.s64 %rd4, %rd2, %rd3;\n"
    "  st.global.u32 [%rd4], %r3;\n"
    "  ret;\n"
    "}\n";

/* A PTX image of about `mib` MiB: the kernel, then comment lines. */
static void image(size_t mib) {
    size_t head = strlen(KERNEL_PTX), total = mib * MIB;
    char *img = malloc(total + 1);
    if (!img)
        fail("malloc");
    memcpy(img, KERNEL_PTX, head);
    size_t at = head;
    while (at + 1024 <= total) {
        memcpy(img + at, "// ", 3);
        memset(img + at + 3, 'x', 1020);
        img[at + 1023] = '\n';
        at += 1024;
    }
    img[at] = 0;
    CUmodule m;
    CHECK(cuModuleLoadData(&m, img));
    free(img);
    CUfunction f;
    CHECK(cuModuleGetFunction(&f, m, "stamp"));
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, 32 * 4));
    unsigned v = 1000;
    void *args[] = {&d, &v};
    CHECK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL));
    CHECK(cuCtxSynchronize());
    unsigned out[32];
    CHECK(cuMemcpyDtoH(out, d, sizeof out));
    for (unsigned i = 0; i < 32; i++)
        if (out[i] != v + i)
            fail("stamp[%u] = %u, expected %u", i, out[i], v + i);
    CHECK(cuMemFree(d));
    CHECK(cuModuleUnload(m));
    printf("image ok=1\n");
}

static void forever(void) {
    size_t n = 300 * MIB;
    unsigned char *buf = malloc(n);
    if (!buf)
        fail("malloc");
    memset(buf, 7, n);
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, n));
    printf("copying\n");
    fflush(stdout);
    for (;;) {
        CHECK(cuMemcpyHtoD(d, buf, n));
        CHECK(cuMemcpyDtoH(buf, d, n));
    }
}

int main(int argc, char **argv) {
    if (argc < 2)
        fail("usage: dataplane sizes|threads|image MIB|forever");
    load();
    if (!strcmp(argv[1], "sizes"))
        sizes();
    else if (!strcmp(argv[1], "threads"))
        threads();
    else if (!strcmp(argv[1], "image") && argc > 2)
        image((size_t)atoi(argv[2]));
    else if (!strcmp(argv[1], "forever"))
        forever();
    else
        fail("unknown mode %s", argv[1]);
    return 0;
}
