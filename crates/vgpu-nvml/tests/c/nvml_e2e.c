/* Drives libvgpu_nvml.so the way a C client does: dlopen by path, symbols by
 * name, declarations written here (no nvml.h needed on the test machine).
 *
 *   nvml_e2e LIB full      every check; prints key=value lines for the Rust
 *                          test, "FAIL: ..." lines for failed checks, and exits
 *                          with the number of failures
 *   nvml_e2e LIB nodaemon  nvmlInit_v2 with no host: prints its code and time
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef int nvret;
typedef void *nvdev;

typedef struct {
    char busIdLegacy[16];
    unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_info_t;

/* The pre-v2 struct a legacy binary passes to nvmlDeviceGetPciInfo. */
typedef struct {
    char busId[16];
    unsigned domain, bus, device, pciDeviceId, pciSubSystemId, reserved[4];
} pci_info_v1_t;

typedef struct { unsigned long long total, free, used; } memory_t;
typedef struct {
    unsigned version;
    unsigned long long total, reserved, free, used;
} memory_v2_t;
typedef struct { unsigned pid; unsigned long long used; } proc_v1_t;
typedef struct {
    unsigned pid;
    unsigned long long used;
    unsigned gpuInstanceId, computeInstanceId;
} proc_v2_t;
typedef struct { unsigned gpu, memory; } util_t;
typedef struct { unsigned version; unsigned sensor; int temperature; } temperature_v1_t;

#define MEMORY_V2_VERSION ((unsigned)(sizeof(memory_v2_t) | (2u << 24)))
#define TEMPERATURE_V1_VERSION ((unsigned)(sizeof(temperature_v1_t) | (1u << 24)))

static void *lib;
static int failures;

static void *sym(const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "FAIL: missing symbol %s\n", name);
        exit(100);
    }
    return p;
}

#define FN(ret, name, args) ret(*name) args = (ret(*) args)sym(#name)
#define CHECK(cond, ...)                                     \
    do {                                                     \
        if (!(cond)) {                                       \
            failures++;                                      \
            fprintf(stdout, "FAIL: line %d: ", __LINE__);    \
            fprintf(stdout, __VA_ARGS__);                    \
            fprintf(stdout, "\n");                           \
        }                                                    \
    } while (0)
#define EXPECT_RC(expr, want)                                                 \
    do {                                                                      \
        nvret rc_ = (expr);                                                   \
        CHECK(rc_ == (want), "%s returned %d, want %d", #expr, rc_, (want)); \
    } while (0)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int nodaemon(void) {
    FN(nvret, nvmlInit_v2, (void));
    FN(const char *, nvmlErrorString, (nvret));
    FN(nvret, nvmlShutdown, (void));
    FN(nvret, nvmlDeviceGetCount_v2, (unsigned *));
    FN(nvret, nvmlSystemGetNVMLVersion, (char *, unsigned));
    FN(nvret, nvmlSystemGetCudaDriverVersion, (int *));
    double t0 = now_ms();
    nvret rc = nvmlInit_v2();
    double t1 = now_ms();
    unsigned n = 7;
    printf("init_rc=%d\n", rc);
    printf("init_ms=%.0f\n", t1 - t0);
    printf("init_error=%s\n", nvmlErrorString(rc));
    printf("count_rc=%d\n", nvmlDeviceGetCount_v2(&n));
    printf("shutdown_rc=%d\n", nvmlShutdown());
    char version[96];
    int cuda_v = 0;
    printf("nvml_version_rc=%d\n", nvmlSystemGetNVMLVersion(version, sizeof version));
    printf("cuda_version_rc=%d\n", nvmlSystemGetCudaDriverVersion(&cuda_v));
    return 0;
}

static void print_procs(const char *what, nvret rc, unsigned count) {
    printf("%s_rc=%d\n%s_count=%u\n", what, rc, what, count);
}

static int full(void) {
    FN(nvret, nvmlInit, (void));
    FN(nvret, nvmlInit_v2, (void));
    FN(nvret, nvmlInitWithFlags, (unsigned));
    FN(nvret, nvmlShutdown, (void));
    FN(const char *, nvmlErrorString, (nvret));
    FN(nvret, nvmlSystemGetDriverVersion, (char *, unsigned));
    FN(nvret, nvmlSystemGetNVMLVersion, (char *, unsigned));
    FN(nvret, nvmlSystemGetCudaDriverVersion, (int *));
    FN(nvret, nvmlSystemGetCudaDriverVersion_v2, (int *));
    FN(nvret, nvmlDeviceGetCount, (unsigned *));
    FN(nvret, nvmlDeviceGetCount_v2, (unsigned *));
    FN(nvret, nvmlDeviceGetHandleByIndex, (unsigned, nvdev *));
    FN(nvret, nvmlDeviceGetHandleByIndex_v2, (unsigned, nvdev *));
    FN(nvret, nvmlDeviceGetHandleByUUID, (const char *, nvdev *));
    FN(nvret, nvmlDeviceGetHandleByPciBusId, (const char *, nvdev *));
    FN(nvret, nvmlDeviceGetHandleByPciBusId_v2, (const char *, nvdev *));
    FN(nvret, nvmlDeviceGetHandleBySerial, (const char *, nvdev *));
    FN(nvret, nvmlDeviceGetName, (nvdev, char *, unsigned));
    FN(nvret, nvmlDeviceGetUUID, (nvdev, char *, unsigned));
    FN(nvret, nvmlDeviceGetSerial, (nvdev, char *, unsigned));
    FN(nvret, nvmlDeviceGetIndex, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetMinorNumber, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetPciInfo, (nvdev, pci_info_v1_t *));
    FN(nvret, nvmlDeviceGetPciInfo_v2, (nvdev, pci_info_t *));
    FN(nvret, nvmlDeviceGetPciInfo_v3, (nvdev, pci_info_t *));
    FN(nvret, nvmlDeviceGetMemoryInfo, (nvdev, memory_t *));
    FN(nvret, nvmlDeviceGetMemoryInfo_v2, (nvdev, memory_v2_t *));
    FN(nvret, nvmlDeviceGetCudaComputeCapability, (nvdev, int *, int *));
    FN(nvret, nvmlDeviceGetTemperature, (nvdev, unsigned, unsigned *));
    FN(nvret, nvmlDeviceGetTemperatureV, (nvdev, temperature_v1_t *));
    FN(nvret, nvmlDeviceGetPowerUsage, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetUtilizationRates, (nvdev, util_t *));
    FN(nvret, nvmlDeviceIsMigDeviceHandle, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetDriverModel_v2, (nvdev, unsigned *, unsigned *));
    FN(nvret, nvmlDeviceGetComputeRunningProcesses, (nvdev, unsigned *, proc_v1_t *));
    FN(nvret, nvmlDeviceGetComputeRunningProcesses_v2, (nvdev, unsigned *, proc_v2_t *));
    FN(nvret, nvmlDeviceGetComputeRunningProcesses_v3, (nvdev, unsigned *, proc_v2_t *));
    FN(nvret, nvmlDeviceGetGraphicsRunningProcesses_v3, (nvdev, unsigned *, proc_v2_t *));
    FN(nvret, nvmlDeviceGetVbiosVersion, (nvdev, char *, unsigned));
    FN(nvret, nvmlDeviceGetBrand, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetArchitecture, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetCurrPcieLinkGeneration, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetMaxPcieLinkGeneration, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetCurrPcieLinkWidth, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetMaxPcieLinkWidth, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetPowerManagementLimit, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetPowerManagementLimitConstraints, (nvdev, unsigned *, unsigned *));
    FN(nvret, nvmlDeviceGetMaxClockInfo, (nvdev, unsigned, unsigned *));
    FN(nvret, nvmlDeviceGetClock, (nvdev, unsigned, unsigned, unsigned *));
    FN(nvret, nvmlDeviceGetPerformanceState, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetPowerState, (nvdev, unsigned *));
    FN(nvret, nvmlDeviceGetCurrentClocksEventReasons, (nvdev, unsigned long long *));
    FN(nvret, nvmlDeviceGetCurrentClocksThrottleReasons, (nvdev, unsigned long long *));
    FN(nvret, nvmlDeviceGetEccMode, (nvdev, unsigned *, unsigned *));
    FN(nvret, nvmlDeviceGetFanSpeed, (nvdev, unsigned *));

    /* Before init: error text works, everything else says UNINITIALIZED. */
    CHECK(strcmp(nvmlErrorString(9), "Driver Not Loaded") == 0, "errorString(9)=%s",
          nvmlErrorString(9));
    CHECK(strcmp(nvmlErrorString(12345), "Unknown Error") == 0, "errorString(12345)");
    unsigned n = 99;
    EXPECT_RC(nvmlShutdown(), 1);
    EXPECT_RC(nvmlDeviceGetCount_v2(&n), 1);

    /* Real NVML answers the NVML and CUDA driver versions before init too
     * (nvml.h lists no UNINITIALIZED for them); the driver version needs it. */
    char early_nvml[96] = "";
    int early_cuda = 0;
    char early_buf[96];
    EXPECT_RC(nvmlSystemGetNVMLVersion(early_nvml, sizeof early_nvml), 0);
    EXPECT_RC(nvmlSystemGetCudaDriverVersion(&early_cuda), 0);
    EXPECT_RC(nvmlSystemGetNVMLVersion(early_buf, 1), 7);
    EXPECT_RC(nvmlSystemGetCudaDriverVersion(NULL), 2);
    EXPECT_RC(nvmlSystemGetDriverVersion(early_buf, sizeof early_buf), 1);
    EXPECT_RC(nvmlDeviceGetCount_v2(&n), 1); /* asking them is no init */
    EXPECT_RC(nvmlShutdown(), 1);

    /* Three inits, refcounted. */
    EXPECT_RC(nvmlInitWithFlags(0), 0);
    EXPECT_RC(nvmlInit_v2(), 0);
    EXPECT_RC(nvmlInit(), 0);

    char buf[96];
    EXPECT_RC(nvmlSystemGetDriverVersion(buf, sizeof buf), 0);
    printf("driver_version=%s\n", buf);
    EXPECT_RC(nvmlSystemGetDriverVersion(buf, 1), 7);
    EXPECT_RC(nvmlSystemGetDriverVersion(NULL, 80), 2);
    EXPECT_RC(nvmlSystemGetNVMLVersion(buf, sizeof buf), 0);
    printf("nvml_version=%s\n", buf);
    CHECK(strcmp(buf, early_nvml) == 0, "nvml version %s, before init %s", buf, early_nvml);
    int cuda_v = 0, cuda_v2 = 0;
    EXPECT_RC(nvmlSystemGetCudaDriverVersion(&cuda_v), 0);
    EXPECT_RC(nvmlSystemGetCudaDriverVersion_v2(&cuda_v2), 0);
    CHECK(cuda_v == cuda_v2, "cuda versions %d %d", cuda_v, cuda_v2);
    CHECK(cuda_v == early_cuda, "cuda version %d, before init %d", cuda_v, early_cuda);
    printf("cuda_driver_version=%d\n", cuda_v);

    unsigned n1 = 0;
    EXPECT_RC(nvmlDeviceGetCount_v2(&n), 0);
    EXPECT_RC(nvmlDeviceGetCount(&n1), 0);
    EXPECT_RC(nvmlDeviceGetCount_v2(NULL), 2);
    CHECK(n == n1, "count %u vs legacy %u", n, n1);
    printf("count=%u\n", n);

    nvdev h = NULL, h1 = NULL, other = NULL;
    EXPECT_RC(nvmlDeviceGetHandleByIndex_v2(0, &h), 0);
    EXPECT_RC(nvmlDeviceGetHandleByIndex(0, &h1), 0);
    CHECK(h != NULL && h == h1, "handles %p %p", h, h1);
    EXPECT_RC(nvmlDeviceGetHandleByIndex_v2(n, &other), 2);
    EXPECT_RC(nvmlDeviceGetHandleByIndex_v2(0, NULL), 2);

    EXPECT_RC(nvmlDeviceGetName(h, buf, 64), 0);
    printf("name=%s\n", buf);
    EXPECT_RC(nvmlDeviceGetName(h, buf, 4), 7);

    char uuid[96];
    EXPECT_RC(nvmlDeviceGetUUID(h, uuid, 80), 0);
    printf("uuid=%s\n", uuid);
    EXPECT_RC(nvmlDeviceGetUUID(h, buf, 10), 7);

    char serial[64] = "";
    nvret serial_rc = nvmlDeviceGetSerial(h, serial, 30);
    printf("serial_rc=%d\nserial=%s\n", serial_rc, serial);

    unsigned idx = 99, minor = 99;
    EXPECT_RC(nvmlDeviceGetIndex(h, &idx), 0);
    CHECK(idx == 0, "index %u", idx);
    EXPECT_RC(nvmlDeviceGetMinorNumber(h, &minor), 0);
    printf("minor=%u\n", minor);

    pci_info_t pci, pci2;
    memset(&pci, 0x55, sizeof pci);
    EXPECT_RC(nvmlDeviceGetPciInfo_v3(h, &pci), 0);
    EXPECT_RC(nvmlDeviceGetPciInfo_v2(h, &pci2), 0);
    CHECK(memcmp(&pci, &pci2, sizeof pci) == 0, "pci v2 != v3");
    printf("pci_bus_id=%s\npci_bus_id_legacy=%s\n", pci.busId, pci.busIdLegacy);
    printf("pci_domain=%u\npci_bus=%u\npci_device=%u\n", pci.domain, pci.bus, pci.device);
    printf("pci_device_id=0x%08x\npci_subsystem_id=0x%08x\n", pci.pciDeviceId, pci.pciSubSystemId);
    struct {
        pci_info_v1_t v1;
        unsigned char canary[32];
    } legacy;
    memset(&legacy, 0xAB, sizeof legacy);
    EXPECT_RC(nvmlDeviceGetPciInfo(h, &legacy.v1), 0);
    printf("pci_v1_bus_id=%s\n", legacy.v1.busId);
    for (size_t i = 0; i < sizeof legacy.canary; i++)
        CHECK(legacy.canary[i] == 0xAB, "legacy pci info wrote past its struct at +%zu", i);

    memory_t m = {0, 0, 0}, m2 = {0, 0, 0};
    EXPECT_RC(nvmlDeviceGetMemoryInfo(h, &m), 0);
    EXPECT_RC(nvmlDeviceGetMemoryInfo(h, &m2), 0);
    printf("memory_total=%llu\nmemory_free=%llu\nmemory_used=%llu\n", m.total, m.free, m.used);
    CHECK(m.total == m2.total, "total changed between calls");
    EXPECT_RC(nvmlDeviceGetMemoryInfo(h, NULL), 2);
    memory_v2_t mv2;
    memset(&mv2, 0, sizeof mv2);
    mv2.version = MEMORY_V2_VERSION;
    EXPECT_RC(nvmlDeviceGetMemoryInfo_v2(h, &mv2), 0);
    printf("memory_v2_total=%llu\nmemory_v2_reserved=%llu\n", mv2.total, mv2.reserved);
    mv2.version = 1;
    EXPECT_RC(nvmlDeviceGetMemoryInfo_v2(h, &mv2), 25);

    int major = -1, minor_cc = -1;
    EXPECT_RC(nvmlDeviceGetCudaComputeCapability(h, &major, &minor_cc), 0);
    printf("compute_capability=%d.%d\n", major, minor_cc);

    /* Every lookup of the one device gives back the same handle. */
    nvdev by = NULL;
    EXPECT_RC(nvmlDeviceGetHandleByUUID(uuid, &by), 0);
    CHECK(by == h, "by uuid %p != %p", by, h);
    char upper[96];
    strcpy(upper, uuid);
    for (char *c = upper + 4; *c; c++)
        if (*c >= 'a' && *c <= 'f') *c -= 32;
    by = NULL;
    EXPECT_RC(nvmlDeviceGetHandleByUUID(upper, &by), 0);
    CHECK(by == h, "by upper-case uuid");
    EXPECT_RC(nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000", &by), 6);
    EXPECT_RC(nvmlDeviceGetHandleByUUID(NULL, &by), 2);
    by = NULL;
    EXPECT_RC(nvmlDeviceGetHandleByPciBusId_v2(pci.busId, &by), 0);
    CHECK(by == h, "by bus id %s", pci.busId);
    by = NULL;
    EXPECT_RC(nvmlDeviceGetHandleByPciBusId_v2(pci.busIdLegacy, &by), 0);
    CHECK(by == h, "by legacy bus id %s", pci.busIdLegacy);
    char lower[32];
    snprintf(lower, sizeof lower, "%04x:%02x:%02x.0", pci.domain, pci.bus, pci.device);
    by = NULL;
    EXPECT_RC(nvmlDeviceGetHandleByPciBusId(lower, &by), 0);
    CHECK(by == h, "by lower-case 4-digit bus id %s", lower);
    EXPECT_RC(nvmlDeviceGetHandleByPciBusId_v2("0000:7f:1f.0", &by), 6);
    EXPECT_RC(nvmlDeviceGetHandleByPciBusId_v2("not a bus id", &by), 2);
    if (serial_rc == 0) {
        by = NULL;
        EXPECT_RC(nvmlDeviceGetHandleBySerial(serial, &by), 0);
        CHECK(by == h, "by serial %s", serial);
    }

    /* Live values: asked twice, both must be answered. */
    unsigned temp1 = 0, temp2 = 0, power = 0;
    EXPECT_RC(nvmlDeviceGetTemperature(h, 0, &temp1), 0);
    EXPECT_RC(nvmlDeviceGetTemperature(h, 0, &temp2), 0);
    printf("temperature=%u\ntemperature_again=%u\n", temp1, temp2);
    temperature_v1_t tv = {TEMPERATURE_V1_VERSION, 0, -1};
    EXPECT_RC(nvmlDeviceGetTemperatureV(h, &tv), 0);
    printf("temperature_v=%d\n", tv.temperature);
    printf("power_rc=%d\n", nvmlDeviceGetPowerUsage(h, &power));
    printf("power_mw=%u\n", power);
    util_t u = {101, 101};
    EXPECT_RC(nvmlDeviceGetUtilizationRates(h, &u), 0);
    printf("utilization_gpu=%u\nutilization_memory=%u\n", u.gpu, u.memory);

    /* Entry points that share one body in the shim must each still read
     * their own value. Expected: the H100 PCIe the emulated GPU models
     * (datasheet: PCIe Gen5 x16, 350 W power limit, 200 W minimum, 1755 MHz
     * max boost clock; passively cooled) and nvml.h's enumerators. */
    unsigned v = 0, v2 = 0;
    char vbios[64] = "";
    EXPECT_RC(nvmlDeviceGetVbiosVersion(h, vbios, sizeof vbios), 0);
    EXPECT_RC(nvmlDeviceGetVbiosVersion(h, vbios, 0), 7); /* even "" needs its NUL */
    EXPECT_RC(nvmlDeviceGetBrand(h, &v), 0);
    CHECK(v == 14, "brand %u, want NVML_BRAND_NVIDIA", v);
    EXPECT_RC(nvmlDeviceGetArchitecture(h, &v), 0);
    CHECK(v == 9, "architecture %u, want NVML_DEVICE_ARCH_HOPPER", v);
    EXPECT_RC(nvmlDeviceGetBrand(h, NULL), 2);
    EXPECT_RC(nvmlDeviceGetCurrPcieLinkGeneration(h, &v), 0);
    CHECK(v == 5, "current PCIe generation %u", v);
    EXPECT_RC(nvmlDeviceGetMaxPcieLinkGeneration(h, &v), 0);
    CHECK(v == 5, "max PCIe generation %u", v);
    EXPECT_RC(nvmlDeviceGetCurrPcieLinkWidth(h, &v), 0);
    CHECK(v == 16, "current PCIe width %u", v);
    EXPECT_RC(nvmlDeviceGetMaxPcieLinkWidth(h, &v), 0);
    CHECK(v == 16, "max PCIe width %u", v);
    EXPECT_RC(nvmlDeviceGetMaxPcieLinkWidth(h, NULL), 2);
    EXPECT_RC(nvmlDeviceGetPowerManagementLimit(h, &v), 0);
    CHECK(v == 350000, "power limit %u mW", v);
    EXPECT_RC(nvmlDeviceGetPowerManagementLimitConstraints(h, &v, &v2), 0);
    CHECK(v == 200000 && v2 == 350000, "power limit constraints %u..%u mW", v, v2);
    EXPECT_RC(nvmlDeviceGetPowerManagementLimitConstraints(h, &v, NULL), 2);
    EXPECT_RC(nvmlDeviceGetMaxClockInfo(h, 0 /* GRAPHICS */, &v), 0);
    CHECK(v == 1755, "max graphics clock %u MHz", v);
    EXPECT_RC(nvmlDeviceGetClock(h, 0 /* GRAPHICS */, 3 /* CUSTOMER_BOOST_MAX */, &v), 0);
    CHECK(v == 1755, "boost graphics clock %u MHz", v);
    v = v2 = 99;
    EXPECT_RC(nvmlDeviceGetPerformanceState(h, &v), 0);
    EXPECT_RC(nvmlDeviceGetPowerState(h, &v2), 0);
    CHECK(v == 0 && v2 == 0, "pstate %u, power state %u, want P0", v, v2);
    unsigned long long reasons = 1, throttle = 2;
    EXPECT_RC(nvmlDeviceGetCurrentClocksEventReasons(h, &reasons), 0);
    EXPECT_RC(nvmlDeviceGetCurrentClocksThrottleReasons(h, &throttle), 0);
    CHECK(reasons == throttle, "clock event reasons %llx, throttle reasons %llx", reasons,
          throttle);
    v = v2 = 99;
    EXPECT_RC(nvmlDeviceGetEccMode(h, &v, &v2), 0);
    CHECK(v == 1 && v2 == 1, "ECC mode %u/%u, want enabled", v, v2);
    EXPECT_RC(nvmlDeviceGetFanSpeed(h, &v), 3);

    unsigned is_mig = 7, cur = 0, pend = 0;
    EXPECT_RC(nvmlDeviceIsMigDeviceHandle(h, &is_mig), 0);
    CHECK(is_mig == 0, "is mig %u", is_mig);
    EXPECT_RC(nvmlDeviceGetDriverModel_v2(h, &cur, &pend), 3);

    /* Process lists: the count query, then a fill, in each layout. */
    unsigned cnt = 0;
    nvret rc = nvmlDeviceGetComputeRunningProcesses_v3(h, &cnt, NULL);
    CHECK(rc == 0 || (rc == 7 && cnt > 0), "count query rc %d count %u", rc, cnt);
    print_procs("compute_v3_query", rc, cnt);
    proc_v2_t procs[64];
    cnt = 64;
    rc = nvmlDeviceGetComputeRunningProcesses_v3(h, &cnt, procs);
    print_procs("compute_v3", rc, cnt);
    CHECK(rc == 0, "v3 fill rc %d", rc);
    cnt = 64;
    EXPECT_RC(nvmlDeviceGetComputeRunningProcesses_v2(h, &cnt, procs), 0);
    proc_v1_t procs1[64];
    cnt = 64;
    EXPECT_RC(nvmlDeviceGetComputeRunningProcesses(h, &cnt, procs1), 0);
    cnt = 64;
    rc = nvmlDeviceGetGraphicsRunningProcesses_v3(h, &cnt, procs);
    print_procs("graphics_v3", rc, cnt);
    CHECK(rc == 0, "graphics v3 rc %d", rc);
    EXPECT_RC(nvmlDeviceGetComputeRunningProcesses_v3(h, NULL, procs), 2);

    /* Handles we never gave out. */
    EXPECT_RC(nvmlDeviceGetName(NULL, buf, 64), 2);
    EXPECT_RC(nvmlDeviceGetName((nvdev)(uintptr_t)0x1234, buf, 64), 2);
    EXPECT_RC(nvmlDeviceGetName((nvdev)((char *)h + n), buf, 64), 2);
    EXPECT_RC(nvmlDeviceGetName((nvdev)((char *)h - 1), buf, 64), 2);
    EXPECT_RC(nvmlDeviceGetMemoryInfo((nvdev)buf, &m), 2);
    EXPECT_RC(nvmlDeviceGetName(h, NULL, 64), 2);

    EXPECT_RC(nvmlShutdown(), 0);
    EXPECT_RC(nvmlShutdown(), 0);
    EXPECT_RC(nvmlDeviceGetCount_v2(&n), 0); /* one reference left */
    EXPECT_RC(nvmlShutdown(), 0);
    EXPECT_RC(nvmlShutdown(), 1);
    EXPECT_RC(nvmlDeviceGetCount_v2(&n), 1);
    EXPECT_RC(nvmlDeviceGetName(h, buf, 64), 1);
    CHECK(strcmp(nvmlErrorString(1), "Uninitialized") == 0, "errorString(1)");

    /* Init again after a full shutdown. */
    EXPECT_RC(nvmlInit_v2(), 0);
    EXPECT_RC(nvmlDeviceGetName(h, buf, 64), 0);
    EXPECT_RC(nvmlShutdown(), 0);

    printf("failures=%d\n", failures);
    return failures;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LIB full|nodaemon\n", argv[0]);
        return 100;
    }
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
        return 100;
    }
    if (strcmp(argv[2], "nodaemon") == 0) return nodaemon();
    if (strcmp(argv[2], "full") == 0) return full();
    fprintf(stderr, "unknown mode %s\n", argv[2]);
    return 100;
}
