/* Replays Ollama <= v0.12.3's in-process cgo discovery
 * (discover/gpu_info_nvcuda.c; docs/clients.md "Discovery in the server process").
 *
 * usage: ollama_cgo_0123 [LIBRARY]   (default "libcuda.so.1"; Ollama passes the
 *                                      absolute, symlink-resolved path)
 * stdout, per device:
 *   inference compute id=GPU-... library=cuda compute=9.0 driver=13.0 name="..." total=N available=N
 *   refresh id=GPU-... total=N available=N
 * Exit 0 only if the library has all ten symbols and every device passes
 * Ollama's checks (CC >= 5.0, total > 0, free >= 457 MiB, UUID non-zero). */
#include "vgpu_test.h"

typedef CUresult (*cuInit_fn)(unsigned int);
typedef CUresult (*cuDriverGetVersion_fn)(int *);
typedef CUresult (*cuDeviceGetCount_fn)(int *);
typedef CUresult (*cuDeviceGet_fn)(CUdevice *, int);
typedef CUresult (*cuDeviceGetAttribute_fn)(int *, int, CUdevice);
typedef CUresult (*cuDeviceGetUuid_fn)(CUuuid *, CUdevice);
typedef CUresult (*cuDeviceGetName_fn)(char *, int, CUdevice);
typedef CUresult (*cuCtxCreate_v3_fn)(CUcontext *, void *, int, unsigned int, CUdevice);
typedef CUresult (*cuMemGetInfo_v2_fn)(size_t *, size_t *);
typedef CUresult (*cuCtxDestroy_fn)(CUcontext);

#define GPU_NAME_LEN 96
#define MIN_FREE (457ull * 1024 * 1024)

int main(int argc, char **argv) {
    const char *lib = argc > 1 ? argv[1] : "libcuda.so.1";
    void *h = dlopen(lib, RTLD_LAZY);
    if (!h)
        fail("dlopen(%s, RTLD_LAZY): %s", lib, dlerror());

    /* All ten must resolve, or Ollama skips the library. */
    REQUIRE_SYM(h, cuInit);
    REQUIRE_SYM(h, cuDriverGetVersion);
    REQUIRE_SYM(h, cuDeviceGetCount);
    REQUIRE_SYM(h, cuDeviceGet);
    REQUIRE_SYM(h, cuDeviceGetAttribute);
    REQUIRE_SYM(h, cuDeviceGetUuid);
    REQUIRE_SYM(h, cuDeviceGetName);
    REQUIRE_SYM(h, cuCtxCreate_v3);
    REQUIRE_SYM(h, cuMemGetInfo_v2);
    REQUIRE_SYM(h, cuCtxDestroy);

    CUresult rc = cuInit(0);
    if (rc == 35 || rc == 803)
        fail("cuInit=%d: version mismatch between driver and cuda driver library", rc);
    if (rc == CUDA_ERROR_NO_DEVICE)
        fail("cuInit=100: no nvidia devices detected by library");
    if (rc != CUDA_SUCCESS)
        fail("cuInit=%d: unknown error initializing cuda driver library", rc);

    int version = 0;
    CHECK(cuDriverGetVersion(&version));
    int drv_major = version / 1000, drv_minor = (version % 1000) / 10;

    int count = 0;
    CHECK(cuDeviceGetCount(&count));
    if (count < 1)
        fail("cuDeviceGetCount=%d: Ollama would report library=cpu", count);

    for (int i = 0; i < count; i++) {
        CUdevice dev;
        CHECK(cuDeviceGet(&dev, i));
        int major = 0, minor = 0;
        CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
        CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));

        CUuuid uuid;
        memset(&uuid, 0, sizeof uuid);
        char id[41];
        rc = cuDeviceGetUuid(&uuid, dev);
        if (rc != CUDA_SUCCESS) /* Ollama falls back to the ordinal; we require a UUID */
            fail("device %d: cuDeviceGetUuid=%d", i, rc);
        if (uuid_is_zero(&uuid))
            fail("device %d: UUID is all zeros", i);
        format_uuid(&uuid, id);

        char name[GPU_NAME_LEN];
        memset(name, 0, sizeof name);
        CHECK(cuDeviceGetName(name, GPU_NAME_LEN, dev));
        if (name[0] == '\0')
            fail("device %d: empty name", i);

        CUcontext ctx = NULL;
        rc = cuCtxCreate_v3(&ctx, NULL, 0, 0, dev);
        if (rc != CUDA_SUCCESS)
            fail("cuda driver library failed to get device context %d (cuCtxCreate_v3=%d)", i, rc);
        size_t free_b = 0, total_b = 0;
        rc = cuMemGetInfo_v2(&free_b, &total_b);
        if (rc != CUDA_SUCCESS)
            fail("error looking up nvidia GPU memory (cuMemGetInfo_v2=%d)", rc);
        CHECK(cuCtxDestroy(ctx));

        if (major < 5)
            fail("CUDA GPU is too old. Compute Capability detected: %d.%d", major, minor);
        if (total_b == 0)
            fail("device %d: total memory 0", i);
        if (free_b > total_b)
            fail("device %d: free %zu > total %zu", i, free_b, total_b);
        if (free_b < MIN_FREE)
            fail("device %d: free %zu < 457 MiB: Ollama would offload nothing", i, free_b);

        printf("inference compute id=%s library=cuda compute=%d.%d driver=%d.%d name=\"%s\" "
               "total=%zu available=%zu\n",
               id, major, minor, drv_major, drv_minor, name, total_b, free_b);

        /* Refresh before a model load (nvcuda_get_free). */
        CUdevice dev2;
        CHECK(cuDeviceGet(&dev2, i));
        CUcontext ctx2 = NULL;
        rc = cuCtxCreate_v3(&ctx2, NULL, 0, 0, dev2);
        if (rc != CUDA_SUCCESS)
            fail("refresh: cuCtxCreate_v3=%d", rc);
        size_t free2 = 0, total2 = 0;
        rc = cuMemGetInfo_v2(&free2, &total2);
        if (rc != CUDA_SUCCESS)
            fail("refresh: cuMemGetInfo_v2=%d", rc);
        CHECK(cuCtxDestroy(ctx2));
        if (total2 != total_b)
            fail("refresh: total changed %zu -> %zu", total_b, total2);
        if (free2 < MIN_FREE || free2 > total2)
            fail("refresh: implausible free %zu of %zu", free2, total2);
        printf("refresh id=%s total=%zu available=%zu\n", id, total2, free2);
    }
    fflush(stdout);
    return 0;
}
