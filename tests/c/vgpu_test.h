/* Shared declarations for the C harness in tests/c and the shims' own C
 * tests (crates/vgpu-cuda/tests/c; the harness compiles every C test with
 * -I tests/c).
 *
 * Like Ollama, the programs do not include cuda.h or nvml.h: they declare the
 * few types they use and reach every function through dlopen/dlsym. Two
 * styles of reporting:
 *  - stop at the first failure (tests/c): diagnostics on stderr, one result
 *    line on stdout, exit 0 only when every check passed ("FAIL: ..." on
 *    stderr and exit 1 otherwise); fail, CHECK, REQUIRE_SYM.
 *  - check lists (the shims' tests): every check runs and prints "ok NAME" or
 *    "FAIL NAME: why" on stdout; the program exits 1 if any failed; expect,
 *    EXPECT_RC, open_test_lib, FN. */
#ifndef VGPU_TEST_H
#define VGPU_TEST_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- CUDA driver API (cuda.h) ---- */
typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef struct {
    char bytes[16];
} CUuuid;

#define CUDA_SUCCESS 0
#define CUDA_ERROR_NO_DEVICE 100

#define CU_DEVICE_ATTRIBUTE_INTEGRATED 18
#define CU_DEVICE_ATTRIBUTE_PCI_BUS_ID 33
#define CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID 34
#define CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID 50
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76

/* ---- NVML (nvml.h) ---- */
typedef int nvmlReturn_t;
typedef void *nvmlDevice_t;
typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t; /* v1 */
typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_DRIVER_NOT_LOADED 9

/* ---- helpers ---- */
static inline void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static inline void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stdout);
    exit(1);
}

/* Resolves NAME from HANDLE into a variable NAME of type NAME##_fn, or fails. */
#define REQUIRE_SYM(handle, name)                                                   \
    name##_fn name = (name##_fn)dlsym(handle, #name);                               \
    if (name == NULL)                                                               \
        fail("required symbol %s not found: %s", #name, dlerror());

/* Same, but NULL is allowed. */
#define OPTIONAL_SYM(handle, name) name##_fn name = (name##_fn)dlsym(handle, #name);

/* Fails unless the CUDA/NVML call returns 0. */
#define CHECK(call)                                                                 \
    do {                                                                            \
        int rc_ = (call);                                                           \
        if (rc_ != 0)                                                               \
            fail("%s returned %d", #call, rc_);                                     \
    } while (0)

/* ---- check lists ---- */

/* The library under test (open_test_lib) and the number of failed checks. */
static void *test_lib __attribute__((unused));
static int test_failures __attribute__((unused));

/* dlopens PATH (RTLD_LOCAL, as applications load libcuda) into test_lib, or
 * prints "FAIL dlopen: ..." and exits 2. */
static inline void open_test_lib(const char *path) {
    test_lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!test_lib) {
        printf("FAIL dlopen: %s\n", dlerror());
        exit(2);
    }
}

/* NAME from test_lib, or "FAIL dlsym NAME" and exit 2: a missing export is
 * not a check that can go on. */
static inline void *lib_sym(const char *name) {
    void *p = dlsym(test_lib, name);
    if (!p) {
        printf("FAIL dlsym %s\n", name);
        exit(2);
    }
    return p;
}

/* Declares a local function pointer named like the library's function. */
#define FN(ret, name, args) ret(*name) args = (ret(*) args)lib_sym(#name)

/* One check: "ok NAME", or "FAIL NAME: " and FMT formatted with A and B. */
static inline void expect(int cond, const char *name, const char *fmt, long long a, long long b)
    __attribute__((format(printf, 3, 0)));
static inline void expect(int cond, const char *name, const char *fmt, long long a, long long b) {
    if (cond) {
        printf("ok %s\n", name);
        return;
    }
    printf("FAIL %s: ", name);
    printf(fmt, a, b);
    printf("\n");
    test_failures++;
}

/* One check that CALL returns WANT (a CUresult or nvmlReturn_t). */
#define EXPECT_RC(call, want, name)                                                 \
    do {                                                                            \
        long long r_ = (call);                                                      \
        expect(r_ == (long long)(want), name, "returned %lld, wanted %lld", r_,      \
               (long long)(want));                                                  \
    } while (0)

/* Ollama's UUID text (ggml-cuda / mem_nvml / gpu_info_nvcuda.c). */
static inline void format_uuid(const CUuuid *u, char out[41]) {
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, 41,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
             b[12], b[13], b[14], b[15]);
}

static inline int uuid_is_zero(const CUuuid *u) {
    for (int i = 0; i < 16; i++)
        if (u->bytes[i] != 0)
            return 0;
    return 1;
}

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Expected PCI id: argv value, else $VGPU_PCI_BUS_ID, else the default. */
static inline const char *expected_pci(const char *arg) {
    if (arg && *arg)
        return arg;
    const char *e = getenv("VGPU_PCI_BUS_ID");
    return (e && *e) ? e : "0000:00:05.0";
}

#endif
