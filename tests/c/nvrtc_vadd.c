/* The driver API alone, as cudarc/cuda-python use it: NVRTC compiles a
 * vector add to PTX at run time, the driver loads it with cuModuleLoadData
 * and launches it with cuLaunchKernel — once with kernelParams, once with
 * the packed `extra` buffer.
 *
 *   nvrtc_vadd <path of libnvrtc.so.N>
 */
#include "vgpu_test.h"

typedef int nvrtcResult;
typedef void *nvrtcProgram;
typedef void *CUmodule;
typedef void *CUfunction;
typedef unsigned long long CUdeviceptr;

static const char *SRC =
    "extern \"C\" __global__ void vadd(const float *a, const float *b, float *c, int n) {\n"
    "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "  if (i < n) c[i] = a[i] + b[i];\n"
    "}\n";

#define N 100000

static void check(int rc, const char *what) {
    if (rc != 0) fail("%s returned %d", what, rc);
}

int main(int argc, char **argv) {
    if (argc < 2) fail("usage: nvrtc_vadd <libnvrtc.so>");
    void *nv = dlopen(argv[1], RTLD_NOW);
    if (!nv) fail("dlopen %s: %s", argv[1], dlerror());
    nvrtcResult (*create)(nvrtcProgram *, const char *, const char *, int, const char **, const char **) =
        dlsym(nv, "nvrtcCreateProgram");
    nvrtcResult (*compile)(nvrtcProgram, int, const char **) = dlsym(nv, "nvrtcCompileProgram");
    nvrtcResult (*ptx_size)(nvrtcProgram, size_t *) = dlsym(nv, "nvrtcGetPTXSize");
    nvrtcResult (*get_ptx)(nvrtcProgram, char *) = dlsym(nv, "nvrtcGetPTX");
    nvrtcResult (*log_size)(nvrtcProgram, size_t *) = dlsym(nv, "nvrtcGetProgramLogSize");
    nvrtcResult (*get_log)(nvrtcProgram, char *) = dlsym(nv, "nvrtcGetProgramLog");
    if (!create || !compile || !ptx_size || !get_ptx || !log_size || !get_log) fail("NVRTC symbols missing");

    nvrtcProgram prog;
    check(create(&prog, SRC, "vadd.cu", 0, NULL, NULL), "nvrtcCreateProgram");
    const char *opts[] = {"--gpu-architecture=compute_90"};
    if (compile(prog, 1, opts) != 0) {
        size_t n = 0;
        log_size(prog, &n);
        char *log = malloc(n + 1);
        get_log(prog, log);
        fail("nvrtcCompileProgram: %s", log);
    }
    size_t n = 0;
    check(ptx_size(prog, &n), "nvrtcGetPTXSize");
    char *ptx = malloc(n);
    check(get_ptx(prog, ptx), "nvrtcGetPTX");

    void *cu = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cu) fail("dlopen libcuda.so.1: %s", dlerror());
    CUresult (*cuInit)(unsigned) = dlsym(cu, "cuInit");
    CUresult (*cuDeviceGet)(CUdevice *, int) = dlsym(cu, "cuDeviceGet");
    CUresult (*cuCtxCreate)(CUcontext *, unsigned, CUdevice) = dlsym(cu, "cuCtxCreate_v2");
    CUresult (*cuModuleLoadData)(CUmodule *, const void *) = dlsym(cu, "cuModuleLoadData");
    CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *) = dlsym(cu, "cuModuleGetFunction");
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t) = dlsym(cu, "cuMemAlloc_v2");
    CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t) = dlsym(cu, "cuMemcpyHtoD_v2");
    CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t) = dlsym(cu, "cuMemcpyDtoH_v2");
    CUresult (*cuMemsetD32)(CUdeviceptr, unsigned, size_t) = dlsym(cu, "cuMemsetD32_v2");
    CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                               void *, void **, void **) = dlsym(cu, "cuLaunchKernel");
    CUresult (*cuCtxSynchronize)(void) = dlsym(cu, "cuCtxSynchronize");
    CUresult (*cuModuleUnload)(CUmodule) = dlsym(cu, "cuModuleUnload");
    CUresult (*cuCtxDestroy)(CUcontext) = dlsym(cu, "cuCtxDestroy_v2");

    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction fn;
    check(cuInit(0), "cuInit");
    check(cuDeviceGet(&dev, 0), "cuDeviceGet");
    check(cuCtxCreate(&ctx, 0, dev), "cuCtxCreate_v2");
    check(cuModuleLoadData(&mod, ptx), "cuModuleLoadData");
    check(cuModuleGetFunction(&fn, mod, "vadd"), "cuModuleGetFunction");

    static float a[N], b[N], c[N];
    for (int i = 0; i < N; i++) {
        a[i] = (float)i;
        b[i] = 2.0f * (float)i + 1.0f;
    }
    CUdeviceptr da, db, dc;
    check(cuMemAlloc(&da, sizeof a), "cuMemAlloc");
    check(cuMemAlloc(&db, sizeof b), "cuMemAlloc");
    check(cuMemAlloc(&dc, sizeof c), "cuMemAlloc");
    check(cuMemcpyHtoD(da, a, sizeof a), "cuMemcpyHtoD");
    check(cuMemcpyHtoD(db, b, sizeof b), "cuMemcpyHtoD");
    int count = N;

    /* kernelParams */
    void *params[] = {&da, &db, &dc, &count};
    check(cuLaunchKernel(fn, (N + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, params, NULL), "cuLaunchKernel");
    check(cuCtxSynchronize(), "cuCtxSynchronize");
    check(cuMemcpyDtoH(c, dc, sizeof c), "cuMemcpyDtoH");
    for (int i = 0; i < N; i++)
        if (c[i] != a[i] + b[i]) fail("kernelParams launch: c[%d] = %f", i, c[i]);
    printf("kernelparams ok=1\n");

    /* extra: the arguments packed at their natural alignment. */
    check(cuMemsetD32(dc, 0, N), "cuMemsetD32");
    struct {
        CUdeviceptr a, b, c;
        int n;
    } packed = {da, db, dc, N};
    size_t size = sizeof packed;
    void *extra[] = {(void *)1 /* CU_LAUNCH_PARAM_BUFFER_POINTER */, &packed,
                     (void *)2 /* CU_LAUNCH_PARAM_BUFFER_SIZE */, &size, (void *)0 /* END */};
    check(cuLaunchKernel(fn, (N + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, NULL, extra), "cuLaunchKernel(extra)");
    check(cuMemcpyDtoH(c, dc, sizeof c), "cuMemcpyDtoH");
    for (int i = 0; i < N; i++)
        if (c[i] != a[i] + b[i]) fail("extra launch: c[%d] = %f", i, c[i]);
    printf("extra ok=1\n");

    /* Both at once is the caller's error. */
    int rc = cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, NULL, params, extra);
    if (rc != 1 /* CUDA_ERROR_INVALID_VALUE */) fail("kernelParams + extra returned %d, expected 1", rc);

    check(cuModuleUnload(mod), "cuModuleUnload");
    check(cuCtxDestroy(ctx), "cuCtxDestroy");
    printf("done ok=1\n");
    return 0;
}
