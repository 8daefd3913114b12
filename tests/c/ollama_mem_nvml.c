/* Replays the NVML memory lookup of Ollama v0.12.6 - v0.24 (ggml-cuda
 * mem_nvml.cpp; docs/clients.md "Discovery in runner processes"). The UUID
 * comes from cuDeviceGetUuid here (Ollama uses cudaDeviceProp.uuid, the same bytes).
 *
 * stdout: mem id=GPU-... cuda_total=N nvml_total=N nvml_free=N nvml_used=N name="..."
 * Exit 0 only if NVML finds the device by that UUID string and its memory total
 * is at least cuDeviceTotalMem_v2 (equal on H100; NVML counts more on A100 and
 * L4) (NVML_ERROR_NOT_SUPPORTED = failure: Ollama would report host RAM). */
#include "vgpu_test.h"

typedef CUresult (*cuInit_fn)(unsigned int);
typedef CUresult (*cuDeviceGet_fn)(CUdevice *, int);
typedef CUresult (*cuDeviceGetUuid_fn)(CUuuid *, CUdevice);
typedef CUresult (*cuDeviceGetName_fn)(char *, int, CUdevice);
typedef CUresult (*cuDeviceTotalMem_v2_fn)(size_t *, CUdevice);

typedef nvmlReturn_t (*nvmlInit_v2_fn)(void);
typedef nvmlReturn_t (*nvmlShutdown_fn)(void);
typedef nvmlReturn_t (*nvmlDeviceGetHandleByUUID_fn)(const char *, nvmlDevice_t *);
typedef nvmlReturn_t (*nvmlDeviceGetMemoryInfo_fn)(nvmlDevice_t, nvmlMemory_t *);
typedef nvmlReturn_t (*nvmlDeviceGetName_fn)(nvmlDevice_t, char *, unsigned int);
typedef const char *(*nvmlErrorString_fn)(nvmlReturn_t);

int main(void) {
    /* CUDA side: the id string Ollama builds in step 3. */
    void *cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!cu)
        fail("dlopen(libcuda.so.1): %s", dlerror());
    REQUIRE_SYM(cu, cuInit);
    REQUIRE_SYM(cu, cuDeviceGet);
    REQUIRE_SYM(cu, cuDeviceGetUuid);
    REQUIRE_SYM(cu, cuDeviceGetName);
    REQUIRE_SYM(cu, cuDeviceTotalMem_v2);
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUuuid uuid;
    memset(&uuid, 0, sizeof uuid);
    CHECK(cuDeviceGetUuid(&uuid, dev));
    char id[41];
    format_uuid(&uuid, id);
    char cu_name[256];
    memset(cu_name, 0, sizeof cu_name);
    CHECK(cuDeviceGetName(cu_name, sizeof cu_name, dev));
    size_t cu_total = 0;
    CHECK(cuDeviceTotalMem_v2(&cu_total, dev));

    /* NVML side, as mem_nvml.cpp does it. */
    void *nv = dlopen("/usr/lib/wsl/lib/libnvidia-ml.so.1", RTLD_LAZY);
    if (!nv)
        nv = dlopen("libnvidia-ml.so.1", RTLD_LAZY);
    if (!nv)
        fail("dlopen(libnvidia-ml.so.1, RTLD_LAZY): %s", dlerror());
    REQUIRE_SYM(nv, nvmlInit_v2);
    REQUIRE_SYM(nv, nvmlShutdown);
    REQUIRE_SYM(nv, nvmlDeviceGetHandleByUUID);
    REQUIRE_SYM(nv, nvmlDeviceGetMemoryInfo);
    REQUIRE_SYM(nv, nvmlDeviceGetName);
    OPTIONAL_SYM(nv, nvmlErrorString); /* looked up unchecked ... */

    nvmlReturn_t rc = nvmlInit_v2();
    if (rc != NVML_SUCCESS) {
        /* ... but called right here, so a shim without it crashes Ollama. */
        if (!nvmlErrorString)
            fail("nvmlInit_v2=%d and nvmlErrorString missing (Ollama would crash)", rc);
        fail("nvmlInit_v2=%d (%s)", rc, nvmlErrorString(rc));
    }
    if (!nvmlErrorString)
        fail("nvmlErrorString not exported");

    nvmlDevice_t h = NULL;
    rc = nvmlDeviceGetHandleByUUID(id, &h);
    if (rc != NVML_SUCCESS)
        fail("nvmlDeviceGetHandleByUUID(\"%s\")=%d (%s)", id, rc, nvmlErrorString(rc));
    nvmlMemory_t m;
    memset(&m, 0, sizeof m);
    rc = nvmlDeviceGetMemoryInfo(h, &m);
    if (rc == NVML_ERROR_NOT_SUPPORTED)
        fail("nvmlDeviceGetMemoryInfo=NOT_SUPPORTED: Ollama would report host RAM as VRAM");
    if (rc != NVML_SUCCESS)
        fail("nvmlDeviceGetMemoryInfo=%d (%s)", rc, nvmlErrorString(rc));
    char nv_name[96];
    memset(nv_name, 0, sizeof nv_name);
    rc = nvmlDeviceGetName(h, nv_name, sizeof nv_name);
    if (rc != NVML_SUCCESS)
        fail("nvmlDeviceGetName=%d", rc);
    CHECK(nvmlShutdown());

    printf("mem id=%s cuda_total=%zu nvml_total=%llu nvml_free=%llu nvml_used=%llu name=\"%s\"\n",
           id, cu_total, m.total, m.free, m.used, nv_name);

    if (uuid_is_zero(&uuid))
        fail("UUID is all zeros");
    /* NVML may count memory CUDA does not (A100 and L4 boards do). */
    if (m.total < (unsigned long long)cu_total)
        fail("NVML total %llu < cuDeviceTotalMem_v2 %zu", m.total, cu_total);
    if (m.free > m.total || m.used > m.total)
        fail("NVML free %llu / used %llu exceed total %llu", m.free, m.used, m.total);
    if (m.free < 457ull * 1024 * 1024)
        fail("NVML free %llu < 457 MiB", m.free);
    if (strcmp(nv_name, cu_name) != 0)
        fail("NVML name \"%s\" != CUDA name \"%s\"", nv_name, cu_name);
    fflush(stdout);
    return 0;
}
