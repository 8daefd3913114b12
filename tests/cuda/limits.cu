// Context limits, the device heap, allocation granularity and the profiler
// API through cudart, run unmodified through the shims. Prints "<name>
// ok=1" per check and exits non-zero on the first failure.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

// cuda_profiler_api.h is not among the pip nvcc's headers; cudart has the
// functions.
extern "C" cudaError_t CUDARTAPI cudaProfilerStart(void);
extern "C" cudaError_t CUDARTAPI cudaProfilerStop(void);

#include "check.cuh"

// out[0] = whether malloc(big) succeeded, out[1] = whether malloc(huge)
// did; the block is written end to end and freed.
__global__ void heap(size_t big, size_t huge, int *out) {
    char *p = (char *)malloc(big);
    out[0] = p != nullptr;
    if (p) {
        for (size_t i = 0; i < big; i += 4096) p[i] = 1;
        p[big - 1] = 1;
        free(p);
    }
    char *q = (char *)malloc(huge);
    out[1] = q != nullptr;
    if (q) free(q);
}

// Writes past the end of a 10-element array, as numba's out-of-bounds
// test does: inside the allocation's granule, no fault on a GPU.
__global__ void overrun(double *a, int n) { a[threadIdx.x] = threadIdx.x + n; }

int main() {
    size_t v = 0;
    CHECK(cudaDeviceGetLimit(&v, cudaLimitMallocHeapSize));
    if (v != 8u << 20) fail("default heap is 8 MiB");
    CHECK(cudaDeviceSetLimit(cudaLimitMallocHeapSize, 4u << 20));
    CHECK(cudaDeviceGetLimit(&v, cudaLimitMallocHeapSize));
    if (v != 4u << 20) fail("heap set to 4 MiB");
    CHECK(cudaDeviceSetLimit(cudaLimitStackSize, 4096));
    CHECK(cudaDeviceGetLimit(&v, cudaLimitStackSize));
    if (v < 4096) fail("stack size");
    CHECK(cudaDeviceGetLimit(&v, cudaLimitPrintfFifoSize));
    CHECK(cudaDeviceGetLimit(&v, cudaLimitDevRuntimePendingLaunchCount));
    CHECK(cudaDeviceGetLimit(&v, cudaLimitMaxL2FetchGranularity));
    CHECK(cudaDeviceGetLimit(&v, cudaLimitPersistingL2CacheSize));
    printf("limits ok=1\n");

    int *out, host[2];
    CHECK(cudaMalloc(&out, sizeof host));
    heap<<<1, 1>>>(3u << 20, 16u << 20, out);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(host, out, sizeof host, cudaMemcpyDeviceToHost));
    if (host[0] != 1) fail("malloc within the heap");
    if (host[1] != 0) fail("malloc beyond the heap returns NULL");
    // The heap exists now: its size is fixed.
    if (cudaDeviceSetLimit(cudaLimitMallocHeapSize, 16u << 20) != cudaErrorInvalidValue)
        fail("heap size fixed after use");
    cudaGetLastError();
    printf("heap ok=1\n");

    double *a;
    CHECK(cudaMalloc(&a, 10 * sizeof(double)));
    overrun<<<1, 16>>>(a, 0);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    printf("granule ok=1\n");

    CHECK(cudaProfilerStart());
    CHECK(cudaProfilerStop());
    printf("profiler ok=1\n");

    // A block larger than the device allows is refused by the launch.
    overrun<<<1, 2048>>>(a, 0);
    if (cudaGetLastError() == cudaSuccess) fail("2048-thread block refused at launch");
    CHECK(cudaDeviceSynchronize());
    printf("shape ok=1\n");
    printf("done ok=1\n");
    return 0;
}
