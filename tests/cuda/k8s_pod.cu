// A "pod" of the Kubernetes device plugin's end-to-end test
// (crates/vgpu-k8s/tests/device_plugin.rs): run with exactly the
// environment the plugin's Allocate answered, it prints the memory its
// share shows as the device's, runs a kernel and checks it, then asks for
// more memory than the share and prints what the driver answered.
//
//   k8s_pod OVER_MIB  ->  "total_mib=N", "vadd ok=1", "over_quota=<error>"
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#include "check.cuh"

__global__ void vadd(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

int main(int argc, char **argv) {
    size_t over_mib = argc > 1 ? strtoull(argv[1], nullptr, 10) : 0;
    size_t free_b = 0, total_b = 0;
    CHECK(cudaMemGetInfo(&free_b, &total_b));
    printf("total_mib=%zu\n", total_b >> 20);

    const int n = 4096;
    float *a, *b, *c, ha[n], hb[n], hc[n];
    for (int i = 0; i < n; i++) { ha[i] = i; hb[i] = 2 * i; }
    CHECK(cudaMalloc(&a, n * sizeof(float)));
    CHECK(cudaMalloc(&b, n * sizeof(float)));
    CHECK(cudaMalloc(&c, n * sizeof(float)));
    CHECK(cudaMemcpy(a, ha, sizeof ha, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(b, hb, sizeof hb, cudaMemcpyHostToDevice));
    vadd<<<(n + 255) / 256, 256>>>(a, b, c, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost));
    int ok = 1;
    for (int i = 0; i < n; i++) ok &= hc[i] == 3.0f * i;
    printf("vadd ok=%d\n", ok);

    if (over_mib) {
        void *big = nullptr;
        cudaError_t e = cudaMalloc(&big, over_mib << 20);
        printf("over_quota=%s\n", cudaGetErrorName(e));
        if (e == cudaSuccess) cudaFree(big);
    }
    return ok ? 0 : 1;
}
