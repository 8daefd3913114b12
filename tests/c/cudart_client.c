/* A plain CUDA runtime client, built against one libcudart wheel's own
 * headers and linked to that libcudart (no nvcc): device discovery, the
 * device properties Ollama/ggml read, and byte-exact memory round trips.
 *
 *   cudart_client [--sizes N,N,...] [--threads T] [--expect-error CODE]
 *
 * Prints key=value lines on stdout ("prop name=..." etc.), exits 0 only if
 * every check passed. With --expect-error CODE the program instead expects
 * the first runtime call that needs the driver (cudaGetDeviceCount) to fail
 * with CODE, and exits 0 only then (used to prove the integrity check is
 * really checked). */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void failf(const char *what, cudaError_t e) {
    fprintf(stderr, "FAIL: %s: %d (%s)\n", what, (int)e, cudaGetErrorString(e));
    exit(1);
}

#define CHECK(call)                                                                 \
    do {                                                                            \
        cudaError_t e_ = (call);                                                    \
        if (e_ != cudaSuccess) failf(#call, e_);                                    \
    } while (0)

static void fill(unsigned char *p, size_t n, unsigned seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
}

/* H2D, D2D, D2H of `n` bytes, then memset + D2H, each compared byte by byte. */
static void round_trip(size_t n, unsigned seed, int pinned) {
    unsigned char *src, *dst;
    if (pinned) {
        CHECK(cudaMallocHost((void **)&src, n));
        CHECK(cudaMallocHost((void **)&dst, n));
    } else {
        src = malloc(n);
        dst = malloc(n);
        if (!src || !dst) { fprintf(stderr, "FAIL: host malloc %zu\n", n); exit(1); }
    }
    fill(src, n, seed);
    memset(dst, 0, n);
    void *a = NULL, *b = NULL;
    CHECK(cudaMalloc(&a, n));
    CHECK(cudaMalloc(&b, n));
    CHECK(cudaMemcpy(a, src, n, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy(dst, b, n, cudaMemcpyDeviceToHost));
    if (memcmp(src, dst, n) != 0) {
        size_t i = 0;
        while (src[i] == dst[i]) i++;
        fprintf(stderr, "FAIL: round trip of %zu bytes differs at %zu (%02x vs %02x)\n", n, i, src[i], dst[i]);
        exit(1);
    }
    CHECK(cudaMemset(b, 0xA5, n));
    CHECK(cudaMemcpy(dst, b, n, cudaMemcpyDefault));
    for (size_t i = 0; i < n; i++) {
        if (dst[i] != 0xA5) { fprintf(stderr, "FAIL: memset of %zu bytes wrong at %zu\n", n, i); exit(1); }
    }
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
    if (pinned) {
        CHECK(cudaFreeHost(src));
        CHECK(cudaFreeHost(dst));
    } else {
        free(src);
        free(dst);
    }
}

static void *worker(void *arg) {
    unsigned id = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < 8; i++) round_trip(4096 * (id + 1) + (size_t)i, id * 100 + (unsigned)i, 0);
    return NULL;
}

int main(int argc, char **argv) {
    const char *sizes = "1,4097,67108864,268435456";
    int threads = 8;
    int expect_error = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc) sizes = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--expect-error") && i + 1 < argc) expect_error = atoi(argv[++i]);
        else { fprintf(stderr, "usage: %s [--sizes N,..] [--threads T] [--expect-error CODE]\n", argv[0]); return 2; }
    }

    int rt = 0, drv = 0;
    cudaError_t ev = cudaRuntimeGetVersion(&rt);
    /* cudart 11.x bootstraps the driver inside cudaRuntimeGetVersion too and
     * reports a failed integrity check there already. */
    if (ev != cudaSuccess && expect_error >= 0 && (int)ev == expect_error) {
        printf("expected-error runtime_version=%d\n", (int)ev);
        return 0;
    }
    if (ev != cudaSuccess) failf("cudaRuntimeGetVersion", ev);
    cudaDriverGetVersion(&drv);
    printf("versions runtime=%d driver=%d\n", rt, drv);

    int count = -1;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (expect_error >= 0) {
        if ((int)e != expect_error) {
            fprintf(stderr, "FAIL: cudaGetDeviceCount returned %d (%s), expected %d\n", (int)e,
                    cudaGetErrorString(e), expect_error);
            return 1;
        }
        void *p = NULL;
        cudaError_t m = cudaMalloc(&p, 16);
        printf("expected-error count=%d malloc=%d\n", (int)e, (int)m);
        return m == cudaSuccess ? 1 : 0;
    }
    if (e != cudaSuccess) failf("cudaGetDeviceCount", e);
    printf("count n=%d\n", count);
    if (count < 1) { fprintf(stderr, "FAIL: no device\n"); return 1; }

    struct cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    char uuid[64];
    const unsigned char *u = (const unsigned char *)prop.uuid.bytes;
    snprintf(uuid, sizeof uuid,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    printf("prop name=\"%s\" major=%d minor=%d total=%zu sms=%d warp=%d smem_block=%zu "
           "smem_optin=%zu pci_domain=%d pci_bus=%d pci_device=%d integrated=%d uuid=%s\n",
           prop.name, prop.major, prop.minor, prop.totalGlobalMem, prop.multiProcessorCount,
           prop.warpSize, prop.sharedMemPerBlock, prop.sharedMemPerBlockOptin, prop.pciDomainID,
           prop.pciBusID, prop.pciDeviceID, prop.integrated, uuid);

    char bus[32];
    CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, 0));
    printf("busid id=%s\n", bus);

    size_t free_b = 0, total_b = 0;
    CHECK(cudaMemGetInfo(&free_b, &total_b));
    printf("meminfo free=%zu total=%zu\n", free_b, total_b);

    /* Byte-exact round trips, pageable and pinned. */
    char *list = strdup(sizes);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        size_t n = strtoull(tok, NULL, 10);
        round_trip(n, (unsigned)n, 0);
        round_trip(n, (unsigned)n + 1, 1);
        printf("roundtrip bytes=%zu ok=1\n", n);
    }
    free(list);

    /* Memory is visible in cudaMemGetInfo while held. */
    void *big = NULL;
    size_t before = 0, after = 0;
    CHECK(cudaMemGetInfo(&before, &total_b));
    CHECK(cudaMalloc(&big, (size_t)1 << 30));
    CHECK(cudaMemGetInfo(&after, &total_b));
    printf("meminfo_delta bytes=%zu\n", before - after);
    if (before - after < ((size_t)1 << 30)) { fprintf(stderr, "FAIL: 1 GiB allocation not reflected\n"); return 1; }
    CHECK(cudaFree(big));

#if CUDART_VERSION >= 11020
    /* Stream-ordered allocation. */
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    void *ap = NULL;
    unsigned char hb[4096], hr[4096];
    fill(hb, sizeof hb, 7);
    CHECK(cudaMallocAsync(&ap, sizeof hb, s));
    CHECK(cudaMemcpyAsync(ap, hb, sizeof hb, cudaMemcpyHostToDevice, s));
    CHECK(cudaMemcpyAsync(hr, ap, sizeof hr, cudaMemcpyDeviceToHost, s));
    CHECK(cudaFreeAsync(ap, s));
    CHECK(cudaStreamSynchronize(s));
    if (memcmp(hb, hr, sizeof hb)) { fprintf(stderr, "FAIL: cudaMallocAsync round trip\n"); return 1; }
    CHECK(cudaStreamDestroy(s));
    printf("mallocasync ok=1\n");
#endif

    /* Threads sharing the device, allocating and copying concurrently. */
    pthread_t t[64];
    if (threads > 64) threads = 64;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("threads n=%d ok=1\n", threads);

    CHECK(cudaDeviceSynchronize());
    printf("done ok=1\n");
    return 0;
}
