// Ordinary CUDA kernels, compiled by the pinned nvcc at test time and run
// unmodified through the shims on the software GPU. Every result is checked
// on the CPU; the program prints "<name> ok=1" per check and exits non-zero
// on the first wrong number.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <cuda_runtime.h>

#include "check.cuh"

__global__ void vadd(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

#define TILE 16
__global__ void matmul(const float *A, const float *B, float *C, int n) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.f;
    for (int t = 0; t < n / TILE; t++) {
        As[threadIdx.y][threadIdx.x] = A[row * n + t * TILE + threadIdx.x];
        Bs[threadIdx.y][threadIdx.x] = B[(t * TILE + threadIdx.y) * n + col];
        __syncthreads();
        for (int k = 0; k < TILE; k++) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();
    }
    C[row * n + col] = acc;
}

__global__ void warp_reduce(const int *in, int *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = i < n ? in[i] : 0;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, v);
}

__global__ void histogram(const unsigned char *data, int n, unsigned *bins) {
    __shared__ unsigned local[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) local[i] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        atomicAdd(&local[data[i]], 1u);
    __syncthreads();
    for (int i = threadIdx.x; i < 256; i += blockDim.x) atomicAdd(&bins[i], local[i]);
}

struct Params {
    float scale;
    double offset;
    char tag[3];
    int count;
};

__global__ void by_value(Params p, float *out) {
    int i = threadIdx.x;
    if (i < p.count) out[i] = p.scale * i + (float)p.offset + p.tag[i % 3];
}

__global__ void dyn_shared(const int *in, int *out) {
    extern __shared__ int buf[];
    buf[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x];
}

__device__ __noinline__ float poly(float x) { return 3.f * x * x + 2.f * x + 1.f; }

__global__ void math(const float *in, float *out, int *iout, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = in[i];
    out[4 * i + 0] = sqrtf(x);
    out[4 * i + 1] = expf(-x);
    out[4 * i + 2] = sinf(x) + cosf(x);
    out[4 * i + 3] = poly(x);
    iout[2 * i + 0] = (i * 7919) / 13;
    iout[2 * i + 1] = (i * 7919) % 13;
}

__global__ void busy(float *p, int n, int rounds) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = p[i];
    for (int r = 0; r < rounds; r++) v = v * 0.5f + 1.f;
    p[i] = v;
}

__device__ int table[16];
__constant__ int bias[16];

__global__ void use_globals(int *out) {
    int i = threadIdx.x;
    table[i] = table[i] * 2 + bias[i];
    out[i] = table[i];
}

__global__ void out_of_bounds(int *p) { p[threadIdx.x + (1 << 28)] = 1; }

static int callbacks_seen = 0;
static void CUDART_CB on_done(void *arg) { callbacks_seen += *(int *)arg; }

static bool close(float a, float b, float tol) { return fabsf(a - b) <= tol * (1.f + fabsf(b)); }

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : "all";
    bool all = !strcmp(only, "all");

    if (all || !strcmp(only, "vadd")) {
        const int n = 1 << 20;
        float *a = (float *)malloc(n * 4), *b = (float *)malloc(n * 4), *c = (float *)malloc(n * 4);
        for (int i = 0; i < n; i++) { a[i] = i * 0.5f; b[i] = 1000.f - i; }
        float *da, *db, *dc;
        CHECK(cudaMalloc(&da, n * 4)); CHECK(cudaMalloc(&db, n * 4)); CHECK(cudaMalloc(&dc, n * 4));
        CHECK(cudaMemcpy(da, a, n * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(db, b, n * 4, cudaMemcpyHostToDevice));
        vadd<<<(n + 255) / 256, 256>>>(da, db, dc, n);
        CHECK(cudaGetLastError());
        CHECK(cudaMemcpy(c, dc, n * 4, cudaMemcpyDeviceToHost));
        for (int i = 0; i < n; i++) if (c[i] != a[i] + b[i]) fail("vadd result");
        cudaFree(da); cudaFree(db); cudaFree(dc); free(a); free(b); free(c);
        printf("vadd ok=1\n");
    }
    if (all || !strcmp(only, "matmul")) {
        const int n = 128;
        float *A = (float *)malloc(n * n * 4), *B = (float *)malloc(n * n * 4), *C = (float *)malloc(n * n * 4);
        for (int i = 0; i < n * n; i++) { A[i] = (i % 7) * 0.25f; B[i] = (i % 5) - 2.f; }
        float *dA, *dB, *dC;
        CHECK(cudaMalloc(&dA, n * n * 4)); CHECK(cudaMalloc(&dB, n * n * 4)); CHECK(cudaMalloc(&dC, n * n * 4));
        CHECK(cudaMemcpy(dA, A, n * n * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(dB, B, n * n * 4, cudaMemcpyHostToDevice));
        matmul<<<dim3(n / TILE, n / TILE), dim3(TILE, TILE)>>>(dA, dB, dC, n);
        CHECK(cudaMemcpy(C, dC, n * n * 4, cudaMemcpyDeviceToHost));
        for (int r = 0; r < n; r++)
            for (int c = 0; c < n; c++) {
                float acc = 0.f;
                for (int k = 0; k < n; k++) acc += A[r * n + k] * B[k * n + c];
                if (!close(C[r * n + c], acc, 1e-4f)) fail("matmul result");
            }
        cudaFree(dA); cudaFree(dB); cudaFree(dC); free(A); free(B); free(C);
        printf("matmul ok=1\n");
    }
    if (all || !strcmp(only, "shuffle")) {
        const int n = 100000;
        int *in = (int *)malloc(n * 4);
        long long expect = 0;
        for (int i = 0; i < n; i++) { in[i] = (i % 97) - 40; expect += in[i]; }
        int *din, *dout, out = 0;
        CHECK(cudaMalloc(&din, n * 4)); CHECK(cudaMalloc(&dout, 4));
        CHECK(cudaMemcpy(din, in, n * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemset(dout, 0, 4));
        warp_reduce<<<(n + 255) / 256, 256>>>(din, dout, n);
        CHECK(cudaMemcpy(&out, dout, 4, cudaMemcpyDeviceToHost));
        if (out != expect) fail("warp shuffle reduction");
        cudaFree(din); cudaFree(dout); free(in);
        printf("shuffle ok=1\n");
    }
    if (all || !strcmp(only, "histogram")) {
        const int n = 1 << 18;
        unsigned char *d = (unsigned char *)malloc(n);
        unsigned expect[256] = {0}, got[256];
        for (int i = 0; i < n; i++) { d[i] = (unsigned char)((i * 2654435761u) >> 13); expect[d[i]]++; }
        unsigned char *dd; unsigned *dbins;
        CHECK(cudaMalloc(&dd, n)); CHECK(cudaMalloc(&dbins, 256 * 4));
        CHECK(cudaMemcpy(dd, d, n, cudaMemcpyHostToDevice));
        CHECK(cudaMemset(dbins, 0, 256 * 4));
        histogram<<<64, 256>>>(dd, n, dbins);
        CHECK(cudaMemcpy(got, dbins, 256 * 4, cudaMemcpyDeviceToHost));
        if (memcmp(got, expect, sizeof got)) fail("atomic histogram");
        cudaFree(dd); cudaFree(dbins); free(d);
        printf("histogram ok=1\n");
    }
    if (all || !strcmp(only, "struct")) {
        Params p = {1.5f, 0.25, {1, 2, 3}, 64};
        float *dout, out[64];
        CHECK(cudaMalloc(&dout, sizeof out));
        by_value<<<1, 64>>>(p, dout);
        CHECK(cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost));
        for (int i = 0; i < 64; i++) if (!close(out[i], 1.5f * i + 0.25f + p.tag[i % 3], 1e-6f)) fail("struct by value");
        cudaFree(dout);
        printf("struct ok=1\n");
    }
    if (all || !strcmp(only, "dynshared")) {
        const int blocks = 8, threads = 128, n = blocks * threads;
        int in[n], out[n], *din, *dout;
        for (int i = 0; i < n; i++) in[i] = i * 3;
        CHECK(cudaMalloc(&din, sizeof in)); CHECK(cudaMalloc(&dout, sizeof out));
        CHECK(cudaMemcpy(din, in, sizeof in, cudaMemcpyHostToDevice));
        dyn_shared<<<blocks, threads, threads * sizeof(int)>>>(din, dout);
        CHECK(cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost));
        for (int b = 0; b < blocks; b++)
            for (int t = 0; t < threads; t++)
                if (out[b * threads + t] != in[b * threads + threads - 1 - t]) fail("dynamic shared memory");
        cudaFree(din); cudaFree(dout);
        printf("dynshared ok=1\n");
    }
    if (all || !strcmp(only, "math")) {
        const int n = 1000;
        float in[n], out[4 * n]; int iout[2 * n];
        for (int i = 0; i < n; i++) in[i] = i * 0.01f;
        float *din, *dout; int *diout;
        CHECK(cudaMalloc(&din, sizeof in)); CHECK(cudaMalloc(&dout, sizeof out)); CHECK(cudaMalloc(&diout, sizeof iout));
        CHECK(cudaMemcpy(din, in, sizeof in, cudaMemcpyHostToDevice));
        math<<<(n + 127) / 128, 128>>>(din, dout, diout, n);
        CHECK(cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost));
        CHECK(cudaMemcpy(iout, diout, sizeof iout, cudaMemcpyDeviceToHost));
        for (int i = 0; i < n; i++) {
            float x = in[i];
            if (!close(out[4 * i], sqrtf(x), 1e-5f) || !close(out[4 * i + 1], expf(-x), 1e-5f) ||
                !close(out[4 * i + 2], sinf(x) + cosf(x), 1e-4f) || !close(out[4 * i + 3], 3 * x * x + 2 * x + 1, 1e-5f))
                fail("math functions");
            if (iout[2 * i] != (i * 7919) / 13 || iout[2 * i + 1] != (i * 7919) % 13) fail("integer div/rem");
        }
        cudaFree(din); cudaFree(dout); cudaFree(diout);
        printf("math ok=1\n");
    }
    if (all || !strcmp(only, "streams")) {
        const int n = 1 << 16;
        float *h1, *h2, *d1, *d2;
        CHECK(cudaMallocHost(&h1, n * 4)); CHECK(cudaMallocHost(&h2, n * 4));
        for (int i = 0; i < n; i++) { h1[i] = 1.f; h2[i] = 3.f; }
        CHECK(cudaMalloc(&d1, n * 4)); CHECK(cudaMalloc(&d2, n * 4));
        cudaStream_t s1, s2; cudaEvent_t start, stop, mid;
        CHECK(cudaStreamCreate(&s1)); CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
        CHECK(cudaEventCreate(&start)); CHECK(cudaEventCreate(&stop)); CHECK(cudaEventCreate(&mid));
        CHECK(cudaEventRecord(start, s1));
        CHECK(cudaMemcpyAsync(d1, h1, n * 4, cudaMemcpyHostToDevice, s1));
        busy<<<n / 256, 256, 0, s1>>>(d1, n, 50);
        CHECK(cudaEventRecord(mid, s1));
        CHECK(cudaStreamWaitEvent(s2, mid, 0));
        CHECK(cudaMemcpyAsync(d2, d1, n * 4, cudaMemcpyDeviceToDevice, s2));
        busy<<<n / 256, 256, 0, s2>>>(d2, n, 1);
        CHECK(cudaMemcpyAsync(h2, d2, n * 4, cudaMemcpyDeviceToHost, s2));
        CHECK(cudaEventRecord(stop, s2));
        int one = 1;
        CHECK(cudaLaunchHostFunc(s2, on_done, &one));
        CHECK(cudaEventSynchronize(stop));
        CHECK(cudaStreamSynchronize(s2));
        float ms = -1.f;
        CHECK(cudaEventElapsedTime(&ms, start, stop));
        if (!(ms >= 0.f)) fail("elapsed time");
        float v = 1.f;
        for (int r = 0; r < 50; r++) v = v * 0.5f + 1.f;
        v = v * 0.5f + 1.f;
        for (int i = 0; i < n; i++) if (!close(h2[i], v, 1e-6f)) fail("two streams with an event dependency");
        if (callbacks_seen != 1) fail("host callback");
        CHECK(cudaStreamDestroy(s1)); CHECK(cudaStreamDestroy(s2));
        CHECK(cudaEventDestroy(start)); CHECK(cudaEventDestroy(stop)); CHECK(cudaEventDestroy(mid));
        cudaFree(d1); cudaFree(d2); cudaFreeHost(h1); cudaFreeHost(h2);
        printf("streams ok=1 elapsed_ms=%f\n", ms);
    }
    if (all || !strcmp(only, "globals")) {
        int init[16], b[16], out[16], back[16], *dout, *addr;
        for (int i = 0; i < 16; i++) { init[i] = i; b[i] = 100 * i; }
        CHECK(cudaMemcpyToSymbol(table, init, sizeof init));
        CHECK(cudaMemcpyToSymbol(bias, b, sizeof b));
        CHECK(cudaMalloc(&dout, sizeof out));
        use_globals<<<1, 16>>>(dout);
        CHECK(cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost));
        CHECK(cudaMemcpyFromSymbol(back, table, sizeof back));
        // A symbol's address used with unified copies (cudaMemcpyDefault).
        CHECK(cudaGetSymbolAddress((void **)&addr, table));
        int viadefault[16];
        CHECK(cudaMemcpy(viadefault, addr, sizeof viadefault, cudaMemcpyDefault));
        for (int i = 0; i < 16; i++)
            if (out[i] != 2 * i + 100 * i || back[i] != out[i] || viadefault[i] != out[i])
                fail("module globals");
        cudaFree(dout);
        printf("globals ok=1\n");
    }
    if (!strcmp(only, "oob")) {
        int *p;
        CHECK(cudaMalloc(&p, 1024));
        out_of_bounds<<<1, 32>>>(p);
        cudaError_t e = cudaDeviceSynchronize();
        printf("oob error=%d\n", (int)e);
        // Sticky: the context is unusable afterwards, as on a real GPU.
        cudaError_t e2 = cudaMalloc(&p, 16);
        printf("oob after=%d\n", (int)e2);
        return e == cudaErrorIllegalAddress ? 0 : 1;
    }
    printf("done ok=1\n");
    return 0;
}
