/* With no daemon behind VGPU_HOST, the shims must fail fast and cleanly:
 * cuInit -> CUDA_ERROR_NO_DEVICE (100), nvmlInit_v2 -> NVML_ERROR_DRIVER_NOT_LOADED
 * (9), each within 5 s, and a second attempt behaves the same (no hang, no crash).
 *
 * stdout: no_daemon cuInit=100 cuInit_ms=N cuInit_again=100 cuInit_again_ms=N
 *         nvmlInit_v2=9 nvmlInit_ms=N nvmlInit_again=9 nvmlInit_again_ms=N */
#include "vgpu_test.h"

typedef CUresult (*cuInit_fn)(unsigned int);
typedef CUresult (*cuDeviceGetCount_fn)(int *);
typedef nvmlReturn_t (*nvmlInit_v2_fn)(void);

#define LIMIT_MS 5000.0

int main(void) {
    void *cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!cu)
        fail("dlopen(libcuda.so.1): %s", dlerror());
    void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!nv)
        fail("dlopen(libnvidia-ml.so.1): %s", dlerror());
    REQUIRE_SYM(cu, cuInit);
    REQUIRE_SYM(cu, cuDeviceGetCount);
    REQUIRE_SYM(nv, nvmlInit_v2);

    double t0 = now_ms();
    CUresult c1 = cuInit(0);
    double t1 = now_ms();
    CUresult c2 = cuInit(0);
    double t2 = now_ms();
    int n = -1;
    CUresult cc = cuDeviceGetCount(&n); /* must not crash; any error is fine */
    double t3 = now_ms();
    nvmlReturn_t n1 = nvmlInit_v2();
    double t4 = now_ms();
    nvmlReturn_t n2 = nvmlInit_v2();
    double t5 = now_ms();

    printf("no_daemon cuInit=%d cuInit_ms=%.0f cuInit_again=%d cuInit_again_ms=%.0f "
           "cuDeviceGetCount=%d count=%d nvmlInit_v2=%d nvmlInit_ms=%.0f nvmlInit_again=%d "
           "nvmlInit_again_ms=%.0f\n",
           c1, t1 - t0, c2, t2 - t1, cc, n, n1, t4 - t3, n2, t5 - t4);
    fflush(stdout);

    if (c1 != CUDA_ERROR_NO_DEVICE || c2 != CUDA_ERROR_NO_DEVICE)
        fail("cuInit returned %d then %d, expected 100 (CUDA_ERROR_NO_DEVICE)", c1, c2);
    if (n1 != NVML_ERROR_DRIVER_NOT_LOADED || n2 != NVML_ERROR_DRIVER_NOT_LOADED)
        fail("nvmlInit_v2 returned %d then %d, expected 9 (DRIVER_NOT_LOADED)", n1, n2);
    if (cc == CUDA_SUCCESS && n > 0)
        fail("cuDeviceGetCount reports %d devices after cuInit failed", n);
    if (t1 - t0 > LIMIT_MS || t2 - t1 > LIMIT_MS || t4 - t3 > LIMIT_MS || t5 - t4 > LIMIT_MS)
        fail("an init call took longer than %.0f ms", LIMIT_MS);
    return 0;
}
