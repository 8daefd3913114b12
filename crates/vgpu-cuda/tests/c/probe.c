/* Drives libvgpu_cuda.so the way a CUDA application would: dlopen by path,
 * symbols by name, our own prototypes (no CUDA headers on the build machine).
 *
 *   probe LIB full     every check of the discovery/context surface
 *   probe LIB count    cuInit, then "count N" and device 0's bus id
 *   probe LIB nohost   cuInit without a daemon: "init R ms T"
 *
 * Prints "ok NAME" or "FAIL NAME: ..." per check; exits 1 if any failed. */
#include "vgpu_test.h"
#include <pthread.h>

#define MIB (1024LL * 1024LL)

/* Runs on a second thread: it starts with no current context, and its
 * cuCtxDestroy of the main thread's current context leaves that context
 * current (and dead) over there. */
static void *other_thread(void *arg) {
    CUresult (*get_current)(CUcontext *) = (CUresult(*)(CUcontext *))lib_sym("cuCtxGetCurrent");
    CUresult (*destroy)(CUcontext) = (CUresult(*)(CUcontext))lib_sym("cuCtxDestroy_v2");
    CUcontext cur = (CUcontext)(uintptr_t)1;
    long long rc = get_current(&cur);
    long long fresh = rc == 0 && cur == NULL;
    long long drc = destroy((CUcontext)arg);
    return (void *)(uintptr_t)(fresh | (drc == 0 ? 2 : 0));
}

static int full(void) {
    FN(CUresult, cuInit, (unsigned));
    FN(CUresult, cuDriverGetVersion, (int *));
    FN(CUresult, cuDeviceGetCount, (int *));
    FN(CUresult, cuDeviceGet, (CUdevice *, int));
    FN(CUresult, cuDeviceGetName, (char *, int, CUdevice));
    FN(CUresult, cuDeviceGetAttribute, (int *, int, CUdevice));
    FN(CUresult, cuDeviceComputeCapability, (int *, int *, CUdevice));
    FN(CUresult, cuDeviceTotalMem_v2, (size_t *, CUdevice));
    FN(CUresult, cuDeviceGetUuid, (CUuuid *, CUdevice));
    FN(CUresult, cuDeviceGetUuid_v2, (CUuuid *, CUdevice));
    FN(CUresult, cuDeviceGetPCIBusId, (char *, int, CUdevice));
    FN(CUresult, cuDeviceGetByPCIBusId, (CUdevice *, const char *));
    FN(CUresult, cuCtxCreate_v3, (CUcontext *, void *, int, unsigned, CUdevice));
    FN(CUresult, cuCtxCreate_v2, (CUcontext *, unsigned, CUdevice));
    FN(CUresult, cuCtxDestroy, (CUcontext));
    FN(CUresult, cuCtxDestroy_v2, (CUcontext));
    FN(CUresult, cuMemGetInfo_v2, (size_t *, size_t *));
    FN(CUresult, cuCtxGetCurrent, (CUcontext *));
    FN(CUresult, cuCtxSetCurrent, (CUcontext));
    FN(CUresult, cuCtxPushCurrent_v2, (CUcontext));
    FN(CUresult, cuCtxPopCurrent_v2, (CUcontext *));
    FN(CUresult, cuCtxGetDevice, (CUdevice *));
    FN(CUresult, cuCtxSynchronize, (void));
    FN(CUresult, cuDevicePrimaryCtxRetain, (CUcontext *, CUdevice));
    FN(CUresult, cuDevicePrimaryCtxRelease_v2, (CUdevice));
    FN(CUresult, cuDevicePrimaryCtxGetState, (CUdevice, unsigned *, int *));
    FN(CUresult, cuGetErrorString, (CUresult, const char **));
    FN(CUresult, cuGetErrorName, (CUresult, const char **));

    int n = -1, v = 0;
    CUdevice dev = -1;
    EXPECT_RC(cuDeviceGetCount(&n), 3LL, "count before cuInit is NOT_INITIALIZED");
    EXPECT_RC(cuInit(0), 0LL, "cuInit");
    EXPECT_RC(cuDriverGetVersion(&v), 0LL, "cuDriverGetVersion");
    expect(v >= 13000, "driver version >= 13000", "got %lld%lld", v, 0);
    EXPECT_RC(cuDeviceGetCount(&n), 0LL, "cuDeviceGetCount");
    expect(n == 1, "one device", "got %lld%lld", n, 0);
    EXPECT_RC(cuDeviceGet(&dev, 0), 0LL, "cuDeviceGet");
    EXPECT_RC(cuDeviceGet(&dev, 1), 101LL, "cuDeviceGet(1) is INVALID_DEVICE");
    dev = 0;

    char name[128] = {0};
    EXPECT_RC(cuDeviceGetName(name, sizeof name, dev), 0LL, "cuDeviceGetName");
    expect(strcmp(name, "NVIDIA H100 PCIe") == 0, "name", "%lld%lld", 0, 0);
    if (strcmp(name, "NVIDIA H100 PCIe") != 0) printf("  name was \"%s\"\n", name);
    char shortname[7];
    EXPECT_RC(cuDeviceGetName(shortname, sizeof shortname, dev), 0LL, "short name buffer");
    expect(strcmp(shortname, "NVIDIA") == 0, "name truncated and terminated", "%lld%lld", 0, 0);

    int major = 0, minor = 0, a = -1;
    EXPECT_RC(cuDeviceComputeCapability(&major, &minor, dev), 0LL, "cuDeviceComputeCapability");
    expect(major == 9 && minor == 0, "compute capability 9.0", "got %lld.%lld", major, minor);
    EXPECT_RC(cuDeviceGetAttribute(&a, 75, dev), 0LL, "attribute 75");
    expect(a == 9, "attribute 75 = 9", "got %lld%lld", a, 0);
    EXPECT_RC(cuDeviceGetAttribute(&a, 18, dev), 0LL, "attribute 18 (integrated)");
    expect(a == 0, "attribute 18 = 0", "got %lld%lld", a, 0);
    EXPECT_RC(cuDeviceGetAttribute(&a, 100000, dev), 1LL, "unknown attribute is INVALID_VALUE");
    EXPECT_RC(cuDeviceGetAttribute(&a, 75, 5), 101LL, "attribute of bad device");

    size_t total = 0;
    EXPECT_RC(cuDeviceTotalMem_v2(&total, dev), 0LL, "cuDeviceTotalMem_v2");
    expect(total == 81559 * MIB, "total 81559 MiB", "got %lld bytes%lld", (long long)total, 0);

    int dom = -1, bus = -1, pdev = -1;
    cuDeviceGetAttribute(&dom, 50, dev);
    cuDeviceGetAttribute(&bus, 33, dev);
    cuDeviceGetAttribute(&pdev, 34, dev);
    const char *want_bus = getenv("PROBE_BUS_ID");
    int want_dev = want_bus ? (int)strtol(want_bus + 8, NULL, 16) : 5;
    expect(dom == 0 && bus == 0, "pci domain/bus 0/0", "got %lld/%lld", dom, bus);
    expect(pdev == want_dev, "pci device", "got %lld, wanted %lld", pdev, want_dev);
    char busid[32] = {0};
    EXPECT_RC(cuDeviceGetPCIBusId(busid, sizeof busid, dev), 0LL, "cuDeviceGetPCIBusId");
    expect(strcmp(busid, want_bus ? want_bus : "0000:00:05.0") == 0, "bus id text", "%lld%lld", 0, 0);
    printf("  bus id \"%s\"\n", busid);

    CUdevice found = -1;
    EXPECT_RC(cuDeviceGetByPCIBusId(&found, busid), 0LL, "cuDeviceGetByPCIBusId round trip");
    expect(found == dev, "round trip device", "got %lld%lld", found, 0);
    char nvml_form[40];
    snprintf(nvml_form, sizeof nvml_form, "0000%s", busid);
    for (char *p = nvml_form; *p; p++) if (*p >= 'A' && *p <= 'F') *p += 'a' - 'A';
    found = -1;
    EXPECT_RC(cuDeviceGetByPCIBusId(&found, nvml_form), 0LL, "8-digit lower-case bus id");
    expect(found == dev, "8-digit form device", "got %lld%lld", found, 0);
    EXPECT_RC(cuDeviceGetByPCIBusId(&found, "0000:7f:1f.0"), 101LL, "absent bus id is INVALID_DEVICE");
    EXPECT_RC(cuDeviceGetByPCIBusId(&found, "bogus"), 1LL, "bad bus id is INVALID_VALUE");

    CUuuid u1, u2;
    memset(&u1, 0, sizeof u1);
    memset(&u2, 0xff, sizeof u2);
    EXPECT_RC(cuDeviceGetUuid(&u1, dev), 0LL, "cuDeviceGetUuid");
    EXPECT_RC(cuDeviceGetUuid_v2(&u2, dev), 0LL, "cuDeviceGetUuid_v2");
    int nonzero = 0;
    for (int i = 0; i < 16; i++) nonzero |= u1.bytes[i];
    expect(nonzero, "uuid non-zero", "%lld%lld", 0, 0);
    expect(memcmp(&u1, &u2, 16) == 0, "uuid _v2 equal", "%lld%lld", 0, 0);
    printf("uuid ");
    for (int i = 0; i < 16; i++) printf("%02x", (unsigned char)u1.bytes[i]);
    printf("\n");

    /* Ollama <= 0.12.3's memory probe. */
    CUcontext c = NULL, cur = NULL;
    EXPECT_RC(cuCtxCreate_v3(&c, NULL, 0, 0, dev), 0LL, "cuCtxCreate_v3");
    cuCtxGetCurrent(&cur);
    expect(c != NULL && cur == c, "created context is current", "%lld%lld", 0, 0);
    size_t free_b = 0, total_b = 0;
    EXPECT_RC(cuMemGetInfo_v2(&free_b, &total_b), 0LL, "cuMemGetInfo_v2");
    expect(total_b == 81559 * MIB, "mem total 81559 MiB", "got %lld%lld", (long long)total_b, 0);
    expect(free_b > 457 * MIB && free_b <= total_b, "mem free > 457 MiB", "got %lld%lld", (long long)free_b, 0);
    EXPECT_RC(cuCtxSynchronize(), 0LL, "cuCtxSynchronize");
    EXPECT_RC(cuCtxDestroy(c), 0LL, "cuCtxDestroy");
    cuCtxGetCurrent(&cur);
    expect(cur == NULL, "destroyed context popped", "%lld%lld", 0, 0);
    EXPECT_RC(cuCtxDestroy(c), 201LL, "double destroy is INVALID_CONTEXT");
    EXPECT_RC(cuCtxSetCurrent(c), 201LL, "stale context is INVALID_CONTEXT");
    EXPECT_RC(cuCtxSetCurrent((CUcontext)(uintptr_t)0x1234), 201LL, "bogus context is INVALID_CONTEXT");
    EXPECT_RC(cuMemGetInfo_v2(&free_b, &total_b), 201LL, "no current context is INVALID_CONTEXT");

    /* Stack semantics. */
    CUcontext c1 = NULL, c2 = NULL, popped = NULL;
    EXPECT_RC(cuCtxCreate_v2(&c1, 0, dev), 0LL, "create c1");
    EXPECT_RC(cuCtxCreate_v2(&c2, 0, dev), 0LL, "create c2");
    cuCtxGetCurrent(&cur);
    expect(cur == c2 && c1 != c2, "c2 current after create", "%lld%lld", 0, 0);
    EXPECT_RC(cuCtxPopCurrent_v2(&popped), 0LL, "pop");
    cuCtxGetCurrent(&cur);
    expect(popped == c2 && cur == c1, "pop returns c2, c1 current", "%lld%lld", 0, 0);
    EXPECT_RC(cuCtxPushCurrent_v2(c2), 0LL, "push c2");
    EXPECT_RC(cuCtxSetCurrent(c1), 0LL, "set c1 replaces top");
    EXPECT_RC(cuCtxPopCurrent_v2(&popped), 0LL, "pop again");
    cuCtxGetCurrent(&cur);
    expect(popped == c1 && cur == c1, "set replaced c2 by c1", "%lld%lld", 0, 0);
    CUdevice cd = -1;
    EXPECT_RC(cuCtxGetDevice(&cd), 0LL, "cuCtxGetDevice");
    expect(cd == dev, "context device", "got %lld%lld", cd, 0);
    EXPECT_RC(cuCtxSetCurrent(NULL), 0LL, "set NULL pops");
    cuCtxGetCurrent(&cur);
    expect(cur == NULL, "stack empty", "%lld%lld", 0, 0);
    EXPECT_RC(cuCtxPopCurrent_v2(&popped), 201LL, "pop empty is INVALID_CONTEXT");
    EXPECT_RC(cuCtxGetDevice(&cd), 201LL, "no current: cuCtxGetDevice INVALID_CONTEXT");
    EXPECT_RC(cuCtxDestroy_v2(c1), 0LL, "destroy c1");
    EXPECT_RC(cuCtxDestroy_v2(c2), 0LL, "destroy c2");

    /* Threads: per-thread stacks, destroy from elsewhere. */
    CUcontext t = NULL;
    EXPECT_RC(cuCtxCreate_v2(&t, 0, dev), 0LL, "create for thread test");
    pthread_t th;
    void *res = NULL;
    pthread_create(&th, NULL, other_thread, t);
    pthread_join(th, &res);
    expect(((uintptr_t)res & 1) != 0, "new thread has no current context", "%lld%lld", 0, 0);
    expect(((uintptr_t)res & 2) != 0, "destroy from another thread", "%lld%lld", 0, 0);
    cuCtxGetCurrent(&cur);
    expect(cur == t, "destroyed context stays current here", "%lld%lld", 0, 0);
    EXPECT_RC(cuCtxSynchronize(), 709LL, "work in it is CONTEXT_IS_DESTROYED");
    EXPECT_RC(cuCtxGetDevice(&cd), 709LL, "queries too");
    EXPECT_RC(cuCtxPopCurrent_v2(&popped), 0LL, "it can still be popped");
    expect(popped == t, "popped the dead one", "%lld%lld", 0, 0);

    /* Primary context. */
    CUcontext p1 = NULL, p2 = NULL;
    unsigned flags = 99;
    int active = -1;
    EXPECT_RC(cuDevicePrimaryCtxGetState(dev, &flags, &active), 0LL, "state before retain");
    expect(active == 0, "inactive before retain", "active %lld%lld", active, 0);
    EXPECT_RC(cuDevicePrimaryCtxRetain(&p1, dev), 0LL, "retain 1");
    EXPECT_RC(cuDevicePrimaryCtxRetain(&p2, dev), 0LL, "retain 2");
    expect(p1 != NULL && p1 == p2, "same primary context", "%lld%lld", 0, 0);
    EXPECT_RC(cuDevicePrimaryCtxGetState(dev, &flags, &active), 0LL, "state");
    expect(active == 1, "active after retain", "active %lld%lld", active, 0);
    EXPECT_RC(cuCtxSetCurrent(p1), 0LL, "primary current");
    EXPECT_RC(cuMemGetInfo_v2(&free_b, &total_b), 0LL, "cuMemGetInfo_v2 in primary");
    EXPECT_RC(cuCtxDestroy(p1), 201LL, "destroying a primary is INVALID_CONTEXT");
    EXPECT_RC(cuDevicePrimaryCtxRelease_v2(dev), 0LL, "release 1");
    EXPECT_RC(cuDevicePrimaryCtxGetState(dev, &flags, &active), 0LL, "state");
    expect(active == 1, "still active after one release", "active %lld%lld", active, 0);
    EXPECT_RC(cuDevicePrimaryCtxRelease_v2(dev), 0LL, "release 2");
    EXPECT_RC(cuDevicePrimaryCtxGetState(dev, &flags, &active), 0LL, "state");
    expect(active == 0, "inactive after releases", "active %lld%lld", active, 0);
    EXPECT_RC(cuMemGetInfo_v2(&free_b, &total_b), 709LL, "released primary is CONTEXT_IS_DESTROYED");
    /* cudart's order: the (inactive) primary is current first, retained after. */
    EXPECT_RC(cuDevicePrimaryCtxRetain(&p2, dev), 0LL, "retain while current");
    expect(p2 == p1, "same object after re-retain", "%lld%lld", 0, 0);
    EXPECT_RC(cuMemGetInfo_v2(&free_b, &total_b), 0LL, "current primary works once retained");
    EXPECT_RC(cuDevicePrimaryCtxRelease_v2(dev), 0LL, "release 3");
    EXPECT_RC(cuCtxSetCurrent(NULL), 0LL, "clear current");

    /* Error strings. */
    const char *s = NULL;
    EXPECT_RC(cuGetErrorString(201, &s), 0LL, "cuGetErrorString");
    expect(s && strcmp(s, "invalid device context") == 0, "error string 201", "%lld%lld", 0, 0);
    EXPECT_RC(cuGetErrorName(100, &s), 0LL, "cuGetErrorName");
    expect(s && strcmp(s, "CUDA_ERROR_NO_DEVICE") == 0, "error name 100", "%lld%lld", 0, 0);
    s = "x";
    EXPECT_RC(cuGetErrorName(4242, &s), 1LL, "unknown code");
    expect(s == NULL, "unknown code gives NULL", "%lld%lld", 0, 0);

    return test_failures ? 1 : 0;
}

static int count(void) {
    FN(CUresult, cuInit, (unsigned));
    FN(CUresult, cuDeviceGetCount, (int *));
    FN(CUresult, cuDeviceGetPCIBusId, (char *, int, CUdevice));
    CUresult r = cuInit(0);
    int n = -1;
    CUresult rc = cuDeviceGetCount(&n);
    printf("init %d count %d rc %d\n", r, n, rc);
    if (n > 0) {
        char busid[32] = {0};
        cuDeviceGetPCIBusId(busid, sizeof busid, 0);
        printf("busid %s\n", busid);
    }
    return 0;
}

static int nohost(void) {
    FN(CUresult, cuInit, (unsigned));
    FN(CUresult, cuDriverGetVersion, (int *));
    FN(CUresult, cuDeviceGetCount, (int *));
    double t0 = now_ms();
    CUresult r = cuInit(0);
    double t1 = now_ms();
    int v = -1, n = -1;
    CUresult rv = cuDriverGetVersion(&v);
    CUresult rn = cuDeviceGetCount(&n);
    printf("init %d ms %.0f version %d rc %d count-rc %d\n", r, t1 - t0, v, rv, rn);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: probe LIB full|count|nohost\n");
        return 2;
    }
    open_test_lib(argv[1]);
    if (strcmp(argv[2], "full") == 0) return full();
    if (strcmp(argv[2], "count") == 0) return count();
    if (strcmp(argv[2], "nohost") == 0) return nohost();
    return 2;
}
