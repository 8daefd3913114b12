/* Kernels through libvgpu_cuda.so's driver API, with hand-written PTX:
 * modules, libraries, kernels as functions, launches (kernelParams, extra,
 * cuLaunchKernelEx), events, host functions, cuLink*, and a deferred
 * launch error reported at the next synchronization.
 *
 *   kernels LIB
 *
 * Prints "ok NAME" or "FAIL NAME: ..." per check; exits 1 if any failed. */
#include "vgpu_test.h"
#include <unistd.h>

typedef void *CUmodule, *CUfunction, *CUlibrary, *CUkernel, *CUstream, *CUevent, *CUlinkState;
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
    } value;
} CUlaunchAttribute;

static const char PTX[] =
    ".version 7.0\n"
    ".target sm_50\n"
    ".address_size 64\n"
    ".visible .global .u32 counter = 7;\n"
    ".visible .entry vadd(.param .u64 a, .param .u64 b, .param .u64 c, .param .u32 n)\n"
    "{\n"
    "  .reg .pred %p<2>;\n"
    "  .reg .b32 %r<6>;\n"
    "  .reg .b64 %rd<11>;\n"
    "  .reg .f32 %f<4>;\n"
    "  ld.param.u64 %rd1, [a];\n"
    "  ld.param.u64 %rd2, [b];\n"
    "  ld.param.u64 %rd3, [c];\n"
    "  ld.param.u32 %r1, [n];\n"
    "  mov.u32 %r2, %ctaid.x;\n"
    "  mov.u32 %r3, %ntid.x;\n"
    "  mov.u32 %r4, %tid.x;\n"
    "  mad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "  setp.ge.s32 %p1, %r5, %r1;\n"
    "  @%p1 bra DONE;\n"
    "  cvta.to.global.u64 %rd4, %rd1;\n"
    "  cvta.to.global.u64 %rd5, %rd2;\n"
    "  cvta.to.global.u64 %rd6, %rd3;\n"
    "  mul.wide.s32 %rd7, %r5, 4;\n"
    "  add.s64 %rd8, %rd4, %rd7;\n"
    "  ld.global.f32 %f1, [%rd8];\n"
    "  add.s64 %rd9, %rd5, %rd7;\n"
    "  ld.global.f32 %f2, [%rd9];\n"
    "  add.f32 %f3, %f1, %f2;\n"
    "  add.s64 %rd10, %rd6, %rd7;\n"
    "  st.global.f32 [%rd10], %f3;\n"
    "DONE:\n"
    "  ret;\n"
    "}\n"
    /* out[tid] = s.mul * tid + s.add, with s a struct by value at offset
     * 0 and `out` at offset 16. */
    ".visible .entry affine(.param .align 8 .b8 s[16], .param .u64 out)\n"
    "{\n"
    "  .reg .b32 %r<6>;\n"
    "  .reg .b64 %rd<5>;\n"
    "  ld.param.u32 %r1, [s];\n"
    "  ld.param.u32 %r2, [s+8];\n"
    "  ld.param.u64 %rd1, [out];\n"
    "  mov.u32 %r3, %tid.x;\n"
    "  mad.lo.s32 %r4, %r3, %r1, %r2;\n"
    "  cvta.to.global.u64 %rd2, %rd1;\n"
    "  mul.wide.u32 %rd3, %r3, 4;\n"
    "  add.s64 %rd4, %rd2, %rd3;\n"
    "  st.global.u32 [%rd4], %r4;\n"
    "  ret;\n"
    "}\n"
    /* Writes far outside any allocation. */
    /* A launch bound of 128 threads. */
    ".visible .entry bounded(.param .u64 p)\n"
    ".maxntid 128, 1, 1\n"
    "{\n"
    "  ret;\n"
    "}\n"
    ".visible .entry wild(.param .u64 p)\n"
    "{\n"
    "  .reg .b64 %rd<3>;\n"
    "  ld.param.u64 %rd1, [p];\n"
    "  add.s64 %rd2, %rd1, 68719476736;\n"
    "  st.global.u32 [%rd2], 1;\n"
    "  ret;\n"
    "}\n";

static int host_fn_runs;
static void host_fn(void *arg) { host_fn_runs += *(int *)arg; }

static int callback_status = -1;
static void callback(CUstream s, CUresult status, void *arg) {
    (void)s;
    (void)arg;
    callback_status = status;
}

static int smem_calls;
static size_t smem_per_block(int block) {
    smem_calls++;
    return (size_t)block * 4;
}

#define N 1000

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    open_test_lib(argv[1]);
    FN(CUresult, cuInit, (unsigned));
    FN(CUresult, cuDeviceGet, (CUdevice *, int));
    FN(CUresult, cuCtxCreate_v2, (CUcontext *, unsigned, CUdevice));
    FN(CUresult, cuCtxSynchronize, (void));
    FN(CUresult, cuCtxDestroy_v2, (CUcontext));
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t));
    FN(CUresult, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t));
    FN(CUresult, cuModuleLoadData, (CUmodule *, const void *));
    FN(CUresult, cuModuleUnload, (CUmodule));
    FN(CUresult, cuModuleGetFunction, (CUfunction *, CUmodule, const char *));
    FN(CUresult, cuModuleGetGlobal_v2, (CUdeviceptr *, size_t *, CUmodule, const char *));
    FN(CUresult, cuFuncGetParamInfo, (CUfunction, size_t, size_t *, size_t *));
    FN(CUresult, cuFuncGetParamCount, (CUfunction, size_t *));
    FN(CUresult, cuFuncGetName, (const char **, CUfunction));
    FN(CUresult, cuFuncGetAttribute, (int *, int, CUfunction));
    FN(CUresult, cuLaunchKernel, (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  unsigned, CUstream, void **, void **));
    FN(CUresult, cuLaunchKernelEx, (const CUlaunchConfig *, CUfunction, void **, void **));
    FN(CUresult, cuLibraryLoadData, (CUlibrary *, const void *, void *, void **, unsigned, void *, void **,
                                     unsigned));
    FN(CUresult, cuLibraryGetKernel, (CUkernel *, CUlibrary, const char *));
    FN(CUresult, cuLibraryGetModule, (CUmodule *, CUlibrary));
    FN(CUresult, cuLibraryUnload, (CUlibrary));
    FN(CUresult, cuKernelGetFunction, (CUfunction *, CUkernel));
    FN(CUresult, cuKernelGetParamInfo, (CUkernel, size_t, size_t *, size_t *));
    FN(CUresult, cuStreamCreate, (CUstream *, unsigned));
    FN(CUresult, cuStreamDestroy_v2, (CUstream));
    FN(CUresult, cuStreamSynchronize, (CUstream));
    FN(CUresult, cuEventCreate, (CUevent *, unsigned));
    FN(CUresult, cuEventDestroy_v2, (CUevent));
    FN(CUresult, cuEventRecord, (CUevent, CUstream));
    FN(CUresult, cuEventQuery, (CUevent));
    FN(CUresult, cuEventSynchronize, (CUevent));
    FN(CUresult, cuEventElapsedTime, (float *, CUevent, CUevent));
    FN(CUresult, cuStreamWaitEvent, (CUstream, CUevent, unsigned));
    FN(CUresult, cuLaunchHostFunc, (CUstream, void (*)(void *), void *));
    FN(CUresult, cuStreamAddCallback, (CUstream, void (*)(CUstream, CUresult, void *), void *, unsigned));
    FN(CUresult, cuLinkCreate_v2, (unsigned, void *, void **, CUlinkState *));
    FN(CUresult, cuLinkAddData_v2, (CUlinkState, int, void *, size_t, const char *, unsigned, void *, void **));
    FN(CUresult, cuLinkComplete, (CUlinkState, void **, size_t *));
    FN(CUresult, cuLinkDestroy, (CUlinkState));
    FN(CUresult, cuOccupancyMaxActiveBlocksPerMultiprocessor, (int *, CUfunction, int, size_t));
    FN(CUresult, cuOccupancyMaxPotentialBlockSize, (int *, int *, CUfunction, size_t (*)(int), size_t, int));
    FN(CUresult, cuModuleLoad, (CUmodule *, const char *));
    FN(CUresult, cuModuleLoadDataEx, (CUmodule *, const void *, unsigned, int *, void **));
    FN(CUresult, cuCtxGetLimit, (size_t *, int));
    FN(CUresult, cuCtxSetLimit, (int, size_t));
    FN(CUresult, cuProfilerStart, (void));
    FN(CUresult, cuProfilerStop, (void));
    FN(CUresult, cuDeviceGetMemPool, (void **, CUdevice));
    FN(CUresult, cuDeviceSetMemPool, (CUdevice, void *));
    FN(CUresult, cuLibraryLoadFromFile, (CUlibrary *, const char *, void *, void **, unsigned, void *, void **,
                                         unsigned));

    EXPECT_RC(cuInit(0), 0, "init");
    CUdevice dev;
    CUcontext ctx;
    EXPECT_RC(cuDeviceGet(&dev, 0), 0, "device");
    EXPECT_RC(cuCtxCreate_v2(&ctx, 0, dev), 0, "ctx create");

    /* ---- images ---- */
    CUmodule mod = NULL;
    static const unsigned char garbage[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0};
    EXPECT_RC(cuModuleLoadData(&mod, garbage), 200, "garbage image is INVALID_IMAGE");
    EXPECT_RC(cuModuleLoadData(&mod, PTX), 0, "load PTX");
    {
        /* JIT outputs: the error log says what failed, the wall time is
         * written as a float. */
        char errlog[256];
        memset(errlog, 'x', sizeof errlog);
        int jopts[] = {5 /* ERROR_LOG_BUFFER */, 6 /* ERROR_LOG_BUFFER_SIZE_BYTES */, 2 /* WALL_TIME */};
        void *jvals[] = {errlog, (void *)(uintptr_t)sizeof errlog, (void *)(uintptr_t)0xffffffff};
        CUmodule bad = NULL;
        EXPECT_RC(cuModuleLoadDataEx(&bad, ".version 7.0\n.target sm_50\nnonsense;\n", 3, jopts, jvals), 218,
                  "bad PTX is INVALID_PTX");
        size_t n = (size_t)(uintptr_t)jvals[1];
        expect(n > 1 && n <= sizeof errlog && errlog[n - 1] == 0 && strstr(errlog, "218"),
               "error log names the error", "%lld bytes %lld", (long long)n, 0);
        float ms;
        unsigned bits = (unsigned)(uintptr_t)jvals[2];
        memcpy(&ms, &bits, sizeof ms);
        expect(ms >= 0.f && ms < 60000.f, "wall time written", "%lld ms %lld", (long long)ms, 0);
    }

    CUfunction vadd = NULL, again = NULL, missing = NULL;
    EXPECT_RC(cuModuleGetFunction(&vadd, mod, "vadd"), 0, "get vadd");
    EXPECT_RC(cuModuleGetFunction(&again, mod, "vadd"), 0, "get vadd again");
    expect(vadd == again, "same function handle", "%llx vs %llx", (long long)(intptr_t)vadd,
          (long long)(intptr_t)again);
    EXPECT_RC(cuModuleGetFunction(&missing, mod, "nope"), 500, "missing function is NOT_FOUND");
    EXPECT_RC(cuModuleGetFunction(&missing, (CUmodule)0x1234, "vadd"), 400, "invented module is INVALID_HANDLE");

    size_t count = 0, off = 0, size = 0;
    EXPECT_RC(cuFuncGetParamCount(vadd, &count), 0, "param count");
    expect(count == 4, "vadd has 4 params", "%lld %lld", (long long)count, 0);
    EXPECT_RC(cuFuncGetParamInfo(vadd, 3, &off, &size), 0, "param 3 info");
    expect(off == 24 && size == 4, "param 3 at 24, 4 bytes", "%lld/%lld", (long long)off, (long long)size);
    EXPECT_RC(cuFuncGetParamInfo(vadd, 4, &off, &size), 1, "param 4 is INVALID_VALUE");
    const char *name = NULL;
    EXPECT_RC(cuFuncGetName(&name, vadd), 0, "func name");
    expect(name && !strcmp(name, "vadd"), "name is vadd", "%lld %lld", 0, 0);
    int regs = -1;
    EXPECT_RC(cuFuncGetAttribute(&regs, 4 /* NUM_REGS */, vadd), 0, "func attribute");

    CUdeviceptr g = 0;
    size_t gsize = 0;
    unsigned gval = 0;
    EXPECT_RC(cuModuleGetGlobal_v2(&g, &gsize, mod, "counter"), 0, "get global");
    expect(gsize == 4, "global is 4 bytes", "%lld %lld", (long long)gsize, 0);
    EXPECT_RC(cuMemcpyDtoH_v2(&gval, g, 4), 0, "read global");
    expect(gval == 7, "global initialised", "%lld %lld", gval, 0);

    /* ---- launches ---- */
    float a[N], b[N], c[N];
    for (int i = 0; i < N; i++) {
        a[i] = i * 0.5f;
        b[i] = 100.f - i;
    }
    CUdeviceptr da, db, dc;
    EXPECT_RC(cuMemAlloc_v2(&da, sizeof a), 0, "alloc a");
    EXPECT_RC(cuMemAlloc_v2(&db, sizeof b), 0, "alloc b");
    EXPECT_RC(cuMemAlloc_v2(&dc, sizeof c), 0, "alloc c");
    EXPECT_RC(cuMemcpyHtoD_v2(da, a, sizeof a), 0, "copy a");
    EXPECT_RC(cuMemcpyHtoD_v2(db, b, sizeof b), 0, "copy b");
    int n = N;
    void *params[] = {&da, &db, &dc, &n};
    EXPECT_RC(cuLaunchKernel(vadd, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, params, NULL), 0, "launch kernelParams");
    memset(c, 0, sizeof c);
    EXPECT_RC(cuMemcpyDtoH_v2(c, dc, sizeof c), 0, "copy c back");
    int bad = 0;
    for (int i = 0; i < N; i++) bad += c[i] != a[i] + b[i];
    expect(!bad, "vadd kernelParams result", "%lld wrong %lld", bad, 0);

    struct {
        CUdeviceptr a, b, c;
        int n;
        int pad;
    } packed = {da, db, dc, N, 0};
    size_t packed_size = 28;
    void *extra[] = {(void *)1, &packed, (void *)2, &packed_size, (void *)0};
    EXPECT_RC(cuMemcpyHtoD_v2(dc, a, sizeof a), 0, "clear c");
    EXPECT_RC(cuLaunchKernel(vadd, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, NULL, extra), 0, "launch extra");
    EXPECT_RC(cuMemcpyDtoH_v2(c, dc, sizeof c), 0, "copy c back (extra)");
    bad = 0;
    for (int i = 0; i < N; i++) bad += c[i] != a[i] + b[i];
    expect(!bad, "vadd extra result", "%lld wrong %lld", bad, 0);

    EXPECT_RC(cuLaunchKernel(vadd, 1, 1, 1, 1, 1, 1, 0, NULL, params, extra), 1, "params and extra is INVALID_VALUE");
    EXPECT_RC(cuLaunchKernel(vadd, 0, 1, 1, 1, 1, 1, 0, NULL, params, NULL), 1, "zero grid is INVALID_VALUE");
    void *bad_extra[] = {(void *)7, NULL, (void *)0};
    EXPECT_RC(cuLaunchKernel(vadd, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, bad_extra), 1, "unknown extra key is INVALID_VALUE");

    /* Struct by value, through cuLaunchKernelEx on a created stream. */
    CUfunction affine;
    EXPECT_RC(cuModuleGetFunction(&affine, mod, "affine"), 0, "get affine");
    EXPECT_RC(cuFuncGetParamInfo(affine, 1, &off, &size), 0, "affine param 1");
    expect(off == 16 && size == 8, "out at 16", "%lld/%lld", (long long)off, (long long)size);
    CUstream s;
    EXPECT_RC(cuStreamCreate(&s, 0), 0, "stream");
    struct {
        int mul;
        int unused;
        int add;
        int unused2;
    } sv = {3, -1, 11, -1};
    CUdeviceptr dout;
    int out[64];
    EXPECT_RC(cuMemAlloc_v2(&dout, sizeof out), 0, "alloc out");
    void *aparams[] = {&sv, &dout};
    CUlaunchAttribute attr;
    memset(&attr, 0, sizeof attr);
    attr.id = 8; /* PRIORITY: not forwarded, must not fail */
    CUlaunchConfig cfg = {1, 1, 1, 64, 1, 1, 0, s, &attr, 1};
    EXPECT_RC(cuLaunchKernelEx(&cfg, affine, aparams, NULL), 0, "launch ex");
    EXPECT_RC(cuStreamSynchronize(s), 0, "stream sync");
    EXPECT_RC(cuMemcpyDtoH_v2(out, dout, sizeof out), 0, "copy out");
    bad = 0;
    for (int i = 0; i < 64; i++) bad += out[i] != 3 * i + 11;
    expect(!bad, "struct by value result", "%lld wrong %lld", bad, 0);

    int blocks = -1;
    EXPECT_RC(cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, vadd, 128, 0), 0, "occupancy");
    expect(blocks > 0, "occupancy positive", "%lld %lld", blocks, 0);

    int min_grid = -1, block = -1, cb_grid = -1, cb_block = -1;
    EXPECT_RC(cuOccupancyMaxPotentialBlockSize(&min_grid, &block, vadd, NULL, 0, 0), 0, "potential block size");
    expect(min_grid > 0 && block > 0 && block % 32 == 0, "potential block size sane", "grid %lld block %lld",
          min_grid, block);
    EXPECT_RC(cuOccupancyMaxPotentialBlockSize(&cb_grid, &cb_block, vadd, smem_per_block, 0, 256), 0,
       "potential block size, callback");
    expect(cb_block > 0 && cb_block <= 256 && cb_grid > 0, "callback search within the limit", "grid %lld block %lld",
          cb_grid, cb_block);
    expect(smem_calls > 0, "callback asked", "%lld calls %lld", smem_calls, 0);

    /* ---- from files ---- */
    char path[] = "/tmp/vgpu-kernels-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fwrite(PTX, 1, sizeof PTX - 1, f); /* no NUL on disk */
    fclose(f);
    CUmodule fm;
    CUlibrary fl;
    CUfunction ff;
    EXPECT_RC(cuModuleLoad(&fm, path), 0, "module from file");
    EXPECT_RC(cuModuleGetFunction(&ff, fm, "affine"), 0, "function of file module");
    EXPECT_RC(cuModuleUnload(fm), 0, "unload file module");
    EXPECT_RC(cuLibraryLoadFromFile(&fl, path, NULL, NULL, 0, NULL, NULL, 0), 0, "library from file");
    EXPECT_RC(cuLibraryUnload(fl), 0, "unload file library");
    unlink(path);
    EXPECT_RC(cuModuleLoad(&fm, "/nonexistent/k.ptx"), 301, "missing file is FILE_NOT_FOUND");

    /* ---- events, host functions ---- */
    CUevent e0, e1;
    EXPECT_RC(cuEventCreate(&e0, 0), 0, "event create");
    EXPECT_RC(cuEventCreate(&e1, 0), 0, "event create 2");
    EXPECT_RC(cuEventRecord(e0, s), 0, "record start");
    EXPECT_RC(cuLaunchKernel(vadd, (N + 127) / 128, 1, 1, 128, 1, 1, 0, s, params, NULL), 0, "launch on stream");
    EXPECT_RC(cuEventRecord(e1, s), 0, "record stop");
    EXPECT_RC(cuStreamWaitEvent(NULL, e1, 0), 0, "wait event");
    int one = 1;
    EXPECT_RC(cuLaunchHostFunc(s, host_fn, &one), 0, "host func");
    expect(host_fn_runs == 1, "host func ran before return", "%lld %lld", host_fn_runs, 0);
    EXPECT_RC(cuStreamAddCallback(s, callback, NULL, 0), 0, "stream callback");
    expect(callback_status == 0, "callback saw success", "%lld %lld", callback_status, 0);
    EXPECT_RC(cuEventSynchronize(e1), 0, "event sync");
    EXPECT_RC(cuEventQuery(e1), 0, "event query");
    float ms = -1;
    EXPECT_RC(cuEventElapsedTime(&ms, e0, e1), 0, "elapsed");
    expect(ms >= 0, "elapsed non-negative", "%lld %lld", (long long)ms, 0);
    EXPECT_RC(cuEventRecord((CUevent)0x77, s), 400, "invented event is INVALID_HANDLE");
    EXPECT_RC(cuEventDestroy_v2(e0), 0, "event destroy");
    EXPECT_RC(cuEventDestroy_v2(e1), 0, "event destroy 2");

    /* ---- libraries: a CUkernel where a CUfunction goes ---- */
    CUlibrary libh;
    CUkernel k;
    EXPECT_RC(cuLibraryLoadData(&libh, PTX, NULL, NULL, 0, NULL, NULL, 0), 0, "library load");
    EXPECT_RC(cuLibraryGetKernel(&k, libh, "vadd"), 0, "library kernel");
    EXPECT_RC(cuKernelGetParamInfo(k, 2, &off, &size), 0, "kernel param info");
    expect(off == 16 && size == 8, "kernel param 2", "%lld/%lld", (long long)off, (long long)size);
    EXPECT_RC(cuMemcpyHtoD_v2(dc, a, sizeof a), 0, "clear c (kernel)");
    EXPECT_RC(cuLaunchKernel((CUfunction)k, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, params, NULL), 0,
       "launch CUkernel");
    EXPECT_RC(cuMemcpyDtoH_v2(c, dc, sizeof c), 0, "copy c back (kernel)");
    bad = 0;
    for (int i = 0; i < N; i++) bad += c[i] != a[i] + b[i];
    expect(!bad, "CUkernel launch result", "%lld wrong %lld", bad, 0);
    CUfunction kf;
    CUmodule lm;
    EXPECT_RC(cuKernelGetFunction(&kf, k), 0, "kernel function");
    EXPECT_RC(cuLibraryGetModule(&lm, libh), 0, "library module");
    EXPECT_RC(cuLibraryUnload(libh), 0, "library unload");
    EXPECT_RC(cuLaunchKernel((CUfunction)k, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL), 400,
       "unloaded kernel is INVALID_HANDLE");

    /* ---- cuLink* ---- */
    CUlinkState link;
    void *cubin = NULL;
    size_t cubin_size = 0;
    EXPECT_RC(cuLinkCreate_v2(0, NULL, NULL, &link), 0, "link create");
    EXPECT_RC(cuLinkAddData_v2(link, 1 /* PTX */, (void *)PTX, sizeof PTX, "k.ptx", 0, NULL, NULL), 0, "link add");
    EXPECT_RC(cuLinkComplete(link, &cubin, &cubin_size), 0, "link complete");
    expect(cubin && cubin_size > 0, "linked image", "%lld bytes %lld", (long long)cubin_size, 0);
    CUmodule linked = NULL;
    EXPECT_RC(cuModuleLoadData(&linked, cubin), 0, "load linked image");
    CUfunction lf;
    EXPECT_RC(cuModuleGetFunction(&lf, linked, "vadd"), 0, "linked vadd");
    EXPECT_RC(cuModuleUnload(linked), 0, "unload linked");
    EXPECT_RC(cuLinkDestroy(link), 0, "link destroy");

    EXPECT_RC(cuModuleUnload(mod), 0, "unload");
    EXPECT_RC(cuModuleGetFunction(&again, mod, "vadd"), 400, "unloaded module is INVALID_HANDLE");
    EXPECT_RC(cuLaunchKernel(vadd, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL), 400, "unloaded function is INVALID_HANDLE");

    /* ---- a deferred failure: reported by the next synchronization ---- */
    CUmodule m2;
    CUfunction wild;
    EXPECT_RC(cuModuleLoadData(&m2, PTX), 0, "reload");
    EXPECT_RC(cuModuleGetFunction(&wild, m2, "wild"), 0, "get wild");

    /* ---- context limits: forwarded to the host's driver ---- */
    size_t lim = 0;
    EXPECT_RC(cuCtxGetLimit(&lim, 2 /* MALLOC_HEAP_SIZE */), 0, "get heap limit");
    expect(lim == 8 << 20, "default heap is 8 MiB", "%lld %lld", (long long)lim, 0);
    EXPECT_RC(cuCtxSetLimit(2, 1 << 20), 0, "set heap limit");
    EXPECT_RC(cuCtxGetLimit(&lim, 2), 0, "get heap limit again");
    expect(lim == 1 << 20, "heap is 1 MiB", "%lld %lld", (long long)lim, 0);
    EXPECT_RC(cuCtxSetLimit(0 /* STACK_SIZE */, 4096), 0, "set stack size");
    EXPECT_RC(cuCtxGetLimit(&lim, 0), 0, "get stack size");
    expect(lim == 4096, "stack is 4 KiB", "%lld %lld", (long long)lim, 0);
    /* The software GPU has no CUDA-in-graphics: unsupported, as on a
     * driver without it. */
    EXPECT_RC(cuCtxGetLimit(&lim, 8 /* CIG_ENABLED */), 215, "CIG_ENABLED is UNSUPPORTED_LIMIT");
    EXPECT_RC(cuCtxGetLimit(&lim, 99), 215, "unknown limit is UNSUPPORTED_LIMIT");
    EXPECT_RC(cuCtxGetLimit(NULL, 0), 1, "NULL out is INVALID_VALUE");

    /* ---- launch shapes the device cannot run fail at the launch, and
     * leave nothing for the next synchronization ---- */
    CUfunction v2;
    EXPECT_RC(cuModuleGetFunction(&v2, m2, "vadd"), 0, "get vadd (reloaded)");
    EXPECT_RC(cuLaunchKernel(v2, 1, 1, 1, 2048, 1, 1, 0, NULL, params, NULL), 1, "2048-thread block");
    EXPECT_RC(cuLaunchKernel(v2, 1, 1, 1, 1, 1, 128, 0, NULL, params, NULL), 1, "block z of 128");
    EXPECT_RC(cuLaunchKernel(v2, 1, 65536, 1, 1, 1, 1, 0, NULL, params, NULL), 1, "grid y of 65536");
    EXPECT_RC(cuLaunchKernel(v2, 1, 1, 1, 1, 1, 1, 1 << 20, NULL, params, NULL), 1, "1 MiB of shared memory");
    EXPECT_RC(cuLaunchKernel(v2, 0, 1, 1, 1, 1, 1, 0, NULL, params, NULL), 1, "empty grid");
    CUfunction bounded;
    EXPECT_RC(cuModuleGetFunction(&bounded, m2, "bounded"), 0, "get bounded");
    void *bparams[] = {&da};
    EXPECT_RC(cuLaunchKernel(bounded, 1, 1, 1, 128, 1, 1, 0, NULL, bparams, NULL), 0, "within .maxntid");
    EXPECT_RC(cuLaunchKernel(bounded, 1, 1, 1, 256, 1, 1, 0, NULL, bparams, NULL), 1, "beyond .maxntid");
    EXPECT_RC(cuCtxSynchronize(), 0, "refused launches leave no error behind");

    /* ---- profiler control (no profiler attached: nothing to do) ---- */
    EXPECT_RC(cuProfilerStart(), 0, "cuProfilerStart");
    EXPECT_RC(cuProfilerStop(), 0, "cuProfilerStop");

    /* ---- the device's current memory pool ---- */
    void *pool = NULL;
    EXPECT_RC(cuDeviceGetMemPool(&pool, dev), 0, "cuDeviceGetMemPool");
    EXPECT_RC(cuDeviceSetMemPool(dev, pool), 0, "cuDeviceSetMemPool to the default pool");
    EXPECT_RC(cuDeviceSetMemPool(dev, (void *)0x1234), 1, "an invented pool is INVALID_VALUE");

    void *wparams[] = {&da};
    EXPECT_RC(cuLaunchKernel(wild, 1, 1, 1, 1, 1, 1, 0, NULL, wparams, NULL), 0, "bad launch is queued");
    EXPECT_RC(cuCtxSynchronize(), 700, "sync reports ILLEGAL_ADDRESS");
    EXPECT_RC(cuCtxSynchronize(), 700, "and again (sticky)");

    cuMemFree_v2(da);
    cuMemFree_v2(db);
    cuMemFree_v2(dc);
    cuMemFree_v2(dout);
    cuStreamDestroy_v2(s);
    cuCtxDestroy_v2(ctx);
    printf("done failures=%d\n", test_failures);
    return test_failures ? 1 : 0;
}
