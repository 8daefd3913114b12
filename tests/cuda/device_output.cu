// Device printf and assert through vgpu (tests/device_output.rs): each mode
// prints host lines around kernels that print, so the test can check what
// reaches this process's stdout and stderr, and in which order.
//
//   printf   host lines, 15 kernel lines, a synchronization, 4 more kernel
//            lines flushed by a blocking copy
//   assert   a failed device assert: the synchronization's error, then two
//            more calls (the error is sticky)
//   flood N  N launches printing ~650 KB each, then one small kernel
//   tag X    20 rounds of 8 lines tagged X, each round synchronized
#include <assert.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>

__global__ void say(int base) {
    printf("dev b=%d t=%d v=%d h=%x\n", blockIdx.x, threadIdx.x,
           base + blockIdx.x * 1000 + threadIdx.x * 7, (blockIdx.x << 8) | threadIdx.x);
}

__global__ void square(int *out) {
    int i = threadIdx.x;
    out[i] = i * i;
    printf("dev2 i=%d sq=%d\n", i, i * i);
}

__global__ void check(int limit) {
    assert(threadIdx.x < limit);
}

__global__ void flood(int launch) {
    printf("flood l=%d b=%d t=%d ......................\n", launch, blockIdx.x, threadIdx.x);
}

__global__ void once() {
    printf("after flood\n");
}

__global__ void tagged(char tag, int round) {
    printf("tag %c r=%d t=%d\n", tag, round, threadIdx.x);
}

static int mode_printf() {
    printf("host before\n");
    say<<<3, 5>>>(40);
    // Nothing flushes device output before the synchronization.
    printf("host launched\n");
    int rc = cudaDeviceSynchronize();
    printf("host after sync=%d\n", rc);
    int *d = nullptr;
    int h[4] = {0};
    if (cudaMalloc(&d, sizeof h) != cudaSuccess) return 1;
    square<<<1, 4>>>(d);
    printf("host copying\n");
    rc = cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    printf("host after copy=%d values=%d,%d,%d,%d\n", rc, h[0], h[1], h[2], h[3]);
    return 0;
}

static int mode_assert() {
    printf("host before assert\n");
    check<<<1, 4>>>(3);
    int rc = cudaDeviceSynchronize();
    printf("assert sync=%d\n", rc);
    void *p = nullptr;
    printf("assert malloc=%d\n", (int)cudaMalloc(&p, 16));
    printf("assert again=%d\n", (int)cudaDeviceSynchronize());
    return 0;
}

static int mode_flood(int launches) {
    for (int l = 0; l < launches; l++) flood<<<64, 256>>>(l);
    int rc = cudaDeviceSynchronize();
    printf("flood sync=%d\n", rc);
    once<<<1, 1>>>();
    rc = cudaDeviceSynchronize();
    printf("flood done=%d\n", rc);
    return 0;
}

static int mode_tag(char tag) {
    for (int r = 0; r < 20; r++) {
        tagged<<<1, 8>>>(tag, r);
        int rc = cudaDeviceSynchronize();
        if (rc != cudaSuccess) {
            printf("tag sync=%d\n", rc);
            return 1;
        }
    }
    printf("tag done\n");
    return 0;
}

int main(int argc, char **argv) {
    const char *m = argc > 1 ? argv[1] : "";
    // No cudaFree(0) first: a kernel launch is each mode's first CUDA call,
    // so cudart loads its fatbin before any context is current.
    if (!strcmp(m, "printf")) return mode_printf();
    if (!strcmp(m, "assert")) return mode_assert();
    if (!strcmp(m, "flood") && argc > 2) return mode_flood(atoi(argv[2]));
    if (!strcmp(m, "tag") && argc > 2) return mode_tag(argv[2][0]);
    fprintf(stderr, "usage: device_output printf|assert|flood N|tag X\n");
    return 2;
}
