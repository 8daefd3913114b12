/* The bootstrap surface libcudart uses, driven the way cudart drives it:
 * every function through cuGetProcAddress_v2, the dark-API tables through
 * cuGetExportTable. Our own prototypes; no CUDA headers needed.
 *
 *   darkapi LIB
 *
 * Prints "ok NAME" or "FAIL NAME: ..." per check; exits 1 if any failed. */
#include "vgpu_test.h"
#include <sys/wait.h>
#include <unistd.h>

typedef void (*cls_dtor)(CUcontext, void *, void *);

static CUresult (*get_proc)(const char *, void **, int, unsigned long long, int *);

static void *proc(const char *name, int version) {
    void *p = NULL;
    int status = -1;
    CUresult r = get_proc(name, &p, version, 0, &status);
    if (r != 0 || !p || status != 0) {
        printf("FAIL cuGetProcAddress_v2 %s@%d: rc %d status %d\n", name, version, r, status);
        exit(2);
    }
    return p;
}

/* Like FN, but through cuGetProcAddress_v2 at VERSION, as cudart resolves. */
#define PROC_FN(ret, name, version, args) ret(*name) args = (ret(*) args)proc(#name, version)

/* The dark-API table ids, as bytes (CUuuid's are plain char). */
static const unsigned char CUDART[16] = {0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a,
                                         0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d, 0xf9};
static const unsigned char CLS[16] = {0xc6, 0x93, 0x33, 0x6e, 0x11, 0x21, 0xdf, 0x11,
                                      0xa8, 0xc3, 0x68, 0xf3, 0x55, 0xd8, 0x95, 0x93};

static int dtor_calls;
static CUcontext dtor_ctx;
static void *dtor_key, *dtor_value;

static void dtor(CUcontext ctx, void *key, void *value) {
    dtor_calls++;
    dtor_ctx = ctx;
    dtor_key = key;
    dtor_value = value;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s LIB\n", argv[0]);
        return 2;
    }
    open_test_lib(argv[1]);
    get_proc = dlsym(test_lib, "cuGetProcAddress_v2");
    expect(get_proc != NULL, "dlsym cuGetProcAddress_v2", "%lld %lld", 0, 0);
    if (!get_proc) return 1;
    expect(proc("cuInit", 2000) == dlsym(test_lib, "cuInit"), "procaddr cuInit", "%lld %lld", 0, 0);
    expect(proc("cuMemAlloc", 3020) == dlsym(test_lib, "cuMemAlloc_v2"), "procaddr cuMemAlloc@3020",
          "%lld %lld", 0, 0);

    PROC_FN(CUresult, cuInit, 2000, (unsigned));
    PROC_FN(CUresult, cuGetExportTable, 3000, (const void **, const CUuuid *));
    PROC_FN(CUresult, cuModuleGetLoadingMode, 11070, (int *));
    PROC_FN(CUresult, cuDeviceGetCount, 2000, (int *));
    PROC_FN(CUresult, cuCtxGetCurrent, 4000, (CUcontext *));
    PROC_FN(CUresult, cuCtxSetCurrent, 4000, (CUcontext));
    PROC_FN(CUresult, cuCtxCreate, 3020, (CUcontext *, unsigned, CUdevice));
    PROC_FN(CUresult, cuCtxDestroy, 4000, (CUcontext));
    PROC_FN(CUresult, cuDevicePrimaryCtxRetain, 7000, (CUcontext *, CUdevice));
    PROC_FN(CUresult, cuDevicePrimaryCtxRelease, 11000, (CUdevice));
    PROC_FN(CUresult, cuDevicePrimaryCtxReset, 11000, (CUdevice));
    PROC_FN(CUresult, cuDevicePrimaryCtxGetState, 7000, (CUdevice, unsigned *, int *));

    EXPECT_RC(cuInit(0), 0, "cuInit");
    int mode = -1;
    EXPECT_RC(cuModuleGetLoadingMode(&mode), 0, "cuModuleGetLoadingMode");
    expect(mode == 2, "loading mode lazy", "mode %lld %lld", mode, 0);

    void *const *cudart = NULL, *const *cls = NULL;
    EXPECT_RC(cuGetExportTable((const void **)&cudart, (const CUuuid *)CUDART), 0, "CUDART_INTERFACE");
    EXPECT_RC(cuGetExportTable((const void **)&cls, (const CUuuid *)CLS), 0, "CLS table");
    if (!cudart || !cls) return 1;
    expect((uintptr_t)cudart[0] == 104, "CUDART_INTERFACE size", "%lld %lld", (long long)(uintptr_t)cudart[0], 0);
    CUresult (*primary_handle)(CUcontext *, CUdevice) = (CUresult(*)(CUcontext *, CUdevice))cudart[2];
    CUresult (*put)(CUcontext, void *, void *, cls_dtor) = (CUresult(*)(CUcontext, void *, void *, cls_dtor))cls[0];
    CUresult (*del)(CUcontext, void *) = (CUresult(*)(CUcontext, void *))cls[1];
    CUresult (*get)(void **, CUcontext, void *) = (CUresult(*)(void **, CUcontext, void *))cls[2];

    /* CUDART_INTERFACE[2]: the primary context's handle, not retained. */
    CUcontext primary = NULL, retained = NULL;
    unsigned flags = 0;
    int active = -1;
    EXPECT_RC(primary_handle(&primary, 0), 0, "CUDART[2]");
    EXPECT_RC(primary_handle(&primary, 7), 101, "CUDART[2] bad device");
    EXPECT_RC(cuDevicePrimaryCtxGetState(0, &flags, &active), 0, "primary state");
    expect(primary && active == 0, "CUDART[2] does not retain", "active %lld %lld", active, 0);

    /* What every runtime call does: current context, then CLS get. */
    void *key = (void *)0x1000, *value = (void *)0x2000, *v = NULL;
    EXPECT_RC(get(&v, NULL, key), 201, "CLS get without a current context");
    EXPECT_RC(cuCtxSetCurrent(primary), 0, "set primary current before retain");
    EXPECT_RC(get(&v, NULL, key), 400, "CLS get miss");
    EXPECT_RC(cuDevicePrimaryCtxRetain(&retained, 0), 0, "retain");
    expect(retained == primary, "retain gives the same handle", "%lld %lld", 0, 0);
    EXPECT_RC(put(NULL, key, value, dtor), 0, "CLS put (current)");
    EXPECT_RC(get(&v, primary, key), 0, "CLS get (explicit)");
    expect(v == value, "CLS value", "%llx %llx", (long long)(uintptr_t)v, (long long)(uintptr_t)value);
    EXPECT_RC(put(primary, key, (void *)0x3000, dtor), 0, "CLS put replaces");
    EXPECT_RC(get(&v, NULL, key), 0, "CLS get (current)");
    expect(v == (void *)0x3000, "CLS replaced value", "%llx %llx", (long long)(uintptr_t)v, 0x3000);
    EXPECT_RC(get(&v, (CUcontext)0x1234, key), 201, "CLS get on an unknown context");
    EXPECT_RC(del(NULL, key), 0, "CLS delete");
    EXPECT_RC(del(NULL, key), 400, "CLS delete twice");
    EXPECT_RC(get(&v, NULL, key), 400, "CLS get after delete");
    expect(dtor_calls == 0, "delete runs no destructor", "%lld calls %lld", dtor_calls, 0);

    /* Reset runs the destructors. */
    EXPECT_RC(put(NULL, key, value, dtor), 0, "CLS put before reset");
    EXPECT_RC(cuDevicePrimaryCtxReset(0), 0, "reset");
    expect(dtor_calls == 1 && dtor_ctx == primary && dtor_key == key && dtor_value == value,
          "destructor on reset", "%lld calls %lld", dtor_calls, 0);
    EXPECT_RC(get(&v, primary, key), 400, "CLS empty after reset");

    /* So does the last release (the context is reset then). */
    EXPECT_RC(cuDevicePrimaryCtxRetain(&retained, 0), 0, "retain again");
    EXPECT_RC(cuDevicePrimaryCtxRetain(&retained, 0), 0, "retain twice");
    EXPECT_RC(put(primary, key, value, dtor), 0, "CLS put before release");
    EXPECT_RC(cuDevicePrimaryCtxRelease(0), 0, "release (not last)");
    expect(dtor_calls == 1, "no destructor before the last release", "%lld calls %lld", dtor_calls, 0);
    EXPECT_RC(cuDevicePrimaryCtxRelease(0), 0, "last release");
    expect(dtor_calls == 2, "destructor on last release", "%lld calls %lld", dtor_calls, 0);

    /* And destroying a created context. */
    CUcontext created = NULL;
    void *key2 = (void *)0x5000;
    EXPECT_RC(cuCtxCreate(&created, 0, 0), 0, "cuCtxCreate");
    EXPECT_RC(put(NULL, key2, value, dtor), 0, "CLS put on created (current)");
    EXPECT_RC(get(&v, created, key2), 0, "CLS get on created");
    EXPECT_RC(get(&v, primary, key2), 400, "CLS is per context");
    EXPECT_RC(cuCtxDestroy(created), 0, "cuCtxDestroy");
    expect(dtor_calls == 3 && dtor_ctx == created && dtor_key == key2, "destructor on destroy",
          "%lld calls %lld", dtor_calls, 0);

    /* A forked child starts uninitialised and may initialise itself. */
    EXPECT_RC(cuCtxSetCurrent(primary), 0, "current before fork");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        test_failures = 0;
        CUcontext cur = (CUcontext)1;
        int n = -1;
        EXPECT_RC(cuCtxGetCurrent(&cur), 3, "child: not initialised");
        EXPECT_RC(cuDeviceGetCount(&n), 3, "child: count not initialised");
        EXPECT_RC(get(&v, primary, key), 3, "child: CLS not initialised");
        EXPECT_RC(cuInit(0), 0, "child: cuInit");
        EXPECT_RC(cuDeviceGetCount(&n), 0, "child: count");
        expect(n == 1, "child: one device", "%lld %lld", n, 0);
        EXPECT_RC(cuCtxGetCurrent(&cur), 0, "child: current");
        expect(cur == NULL, "child: no current context", "%llx %lld", (long long)(uintptr_t)cur, 0);
        EXPECT_RC(cuCtxSetCurrent(primary), 201, "child: parent's handle is unknown");
        CUcontext mine = NULL;
        EXPECT_RC(primary_handle(&mine, 0), 0, "child: CUDART[2]");
        EXPECT_RC(cuDevicePrimaryCtxRetain(&retained, 0), 0, "child: retain");
        EXPECT_RC(cuDevicePrimaryCtxRelease(0), 0, "child: release");
        fflush(stdout);
        _exit(test_failures ? 1 : 0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child passed", "status %lld %lld", st, 0);
    CUcontext cur = NULL;
    EXPECT_RC(cuCtxGetCurrent(&cur), 0, "parent: still initialised");
    expect(cur == primary, "parent: current unchanged", "%lld %lld", 0, 0);

    printf("done failures=%d\n", test_failures);
    return test_failures ? 1 : 0;
}
