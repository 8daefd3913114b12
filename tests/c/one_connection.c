/* Both shims in one process share one connection to the host: NVML then
 * sees what the CUDA side did (its memory and its process), as it does on
 * a real machine, and the process holds exactly one socket.
 *
 * Order as in Ollama's runner and most frameworks: the driver API first,
 * NVML second. */
#include "vgpu_test.h"
#include <dirent.h>
#include <unistd.h>

typedef unsigned long long CUdeviceptr;
typedef struct {
    unsigned pid;
    unsigned long long usedGpuMemory;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

static int sockets(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    char path[300], target[64];
    while (d && (e = readdir(d))) {
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len > 0) {
            target[len] = 0;
            if (!strncmp(target, "socket:", 7)) n++;
        }
    }
    if (d) closedir(d);
    return n;
}

int main(void) {
    void *cu = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cu) fail("dlopen libcuda.so.1: %s", dlerror());
    CUresult (*cuInit)(unsigned) = dlsym(cu, "cuInit");
    CUresult (*cuDeviceGet)(CUdevice *, int) = dlsym(cu, "cuDeviceGet");
    CUresult (*cuCtxCreate)(CUcontext *, unsigned, CUdevice) = dlsym(cu, "cuCtxCreate_v2");
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t) = dlsym(cu, "cuMemAlloc_v2");
    CUresult (*cuMemFree)(CUdeviceptr) = dlsym(cu, "cuMemFree_v2");
    CUdevice dev;
    CUcontext ctx;
    CUdeviceptr p;
    const size_t gib = (size_t)1 << 30;
    if (cuInit(0) || cuDeviceGet(&dev, 0) || cuCtxCreate(&ctx, 0, dev)) fail("CUDA setup");
    if (cuMemAlloc(&p, gib)) fail("cuMemAlloc 1 GiB");

    void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!nv) fail("dlopen libnvidia-ml.so.1: %s", dlerror());
    nvmlReturn_t (*nvmlInit)(void) = dlsym(nv, "nvmlInit_v2");
    nvmlReturn_t (*byIndex)(unsigned, nvmlDevice_t *) = dlsym(nv, "nvmlDeviceGetHandleByIndex_v2");
    nvmlReturn_t (*memInfo)(nvmlDevice_t, nvmlMemory_t *) = dlsym(nv, "nvmlDeviceGetMemoryInfo");
    nvmlReturn_t (*procs)(nvmlDevice_t, unsigned *, nvmlProcessInfo_t *) =
        dlsym(nv, "nvmlDeviceGetComputeRunningProcesses_v3");
    nvmlDevice_t h;
    nvmlMemory_t m;
    if (nvmlInit() || byIndex(0, &h) || memInfo(h, &m)) fail("NVML setup");
    printf("nvml used=%llu\n", m.used);
    if (m.used < gib) fail("NVML does not see the CUDA allocation: used %llu", m.used);
    nvmlProcessInfo_t list[8];
    unsigned n = 8;
    if (procs(h, &n, list)) fail("process list");
    int found = 0;
    for (unsigned i = 0; i < n; i++)
        if (list[i].pid == (unsigned)getpid() && list[i].usedGpuMemory >= gib) found = 1;
    if (!found) fail("this process is not in NVML's process list with its 1 GiB");
    int s = sockets();
    printf("sockets n=%d\n", s);
    if (s != 1) fail("%d sockets: the shims did not share one connection", s);
    if (cuMemFree(p)) fail("cuMemFree");
    printf("done ok=1\n");
    return 0;
}
