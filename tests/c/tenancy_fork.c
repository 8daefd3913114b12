/* Lifetime of a guest's session (docs/security.md, "Lifetime in the
 * guest"). Modes:
 *   fork-blocked: a thread waits in cuCtxSynchronize on an endless kernel;
 *     the main thread forks: fork() must return at once, and the child
 *     gets a session of its own.   -> "fork_ms=N child=0"
 *   orphan: holds memory, forks a child that never execs nor calls and
 *     lives on for 4 s; the parent exits at once.   -> "child_pid=N"
 *   restart FLAG: holds a context and memory, says "ready", waits for FLAG
 *     to exist (the test restarts the host meanwhile), then calls on the
 *     old context twice.   -> "alloc1=R alloc2=R sync=R"
 *   fresh: cuInit, a context, an allocation.   -> "fresh=R"
 *   deadline: cuCtxSynchronize on an endless kernel under VGPU_CALL_TIMEOUT,
 *     then another call.   -> "sync=R ms=N alloc=R" */
#include "vgpu_test.h"
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef unsigned long long CUdeviceptr;
typedef void *CUmodule;
typedef void *CUfunction;

static CUresult (*cuInit)(unsigned);
static CUresult (*cuCtxCreate)(CUcontext *, unsigned, CUdevice);
static CUresult (*cuCtxSynchronize)(void);
static CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*cuModuleLoadData)(CUmodule *, const void *);
static CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  unsigned, unsigned, void *, void **, void **);

static const char SPIN[] = ".version 7.0\n.target sm_80\n.address_size 64\n"
                           ".visible .entry spin()\n{\n$L_top:\n\tbra.uni $L_top;\n}\n";

static void load(void) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (!h) {
        fprintf(stderr, "FAIL: dlopen: %s\n", dlerror());
        exit(1);
    }
#define SYM(v, name)                                                                               \
    do {                                                                                           \
        *(void **)&v = dlsym(h, name);                                                             \
        if (!v) {                                                                                  \
            fprintf(stderr, "FAIL: no %s\n", name);                                                \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
    SYM(cuInit, "cuInit");
    SYM(cuCtxCreate, "cuCtxCreate_v2");
    SYM(cuCtxSynchronize, "cuCtxSynchronize");
    SYM(cuMemAlloc, "cuMemAlloc_v2");
    SYM(cuModuleLoadData, "cuModuleLoadData");
    SYM(cuModuleGetFunction, "cuModuleGetFunction");
    SYM(cuLaunchKernel, "cuLaunchKernel");
}

static void need(CUresult rc, const char *what) {
    if (rc != CUDA_SUCCESS) {
        fprintf(stderr, "FAIL: %s = %d\n", what, rc);
        exit(1);
    }
}

static volatile int blocked;

static void *spin_and_wait(void *arg) {
    (void)arg;
    CUcontext ctx;
    CUmodule m;
    CUfunction f;
    need(cuCtxCreate(&ctx, 0, 0), "cuCtxCreate");
    need(cuModuleLoadData(&m, SPIN), "cuModuleLoadData");
    need(cuModuleGetFunction(&f, m, "spin"), "cuModuleGetFunction");
    need(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), "cuLaunchKernel");
    blocked = 1;
    fprintf(stderr, "synchronize returned %d\n", cuCtxSynchronize());
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    load();
    need(cuInit(0), "cuInit");
    const char *mode = argv[1];
    if (!strcmp(mode, "fork-blocked")) {
        pthread_t t;
        pthread_create(&t, NULL, spin_and_wait, NULL);
        while (!blocked)
            usleep(10000);
        usleep(500000); /* well inside cuCtxSynchronize by now */
        double t0 = now_ms();
        pid_t pid = fork();
        if (pid == 0) {
            CUcontext c;
            CUdeviceptr p;
            /* A forked child starts uninitialized (crates/vgpu-cuda/src/driver.rs). */
            CUresult rc = cuInit(0);
            if (rc == CUDA_SUCCESS)
                rc = cuCtxCreate(&c, 0, 0);
            if (rc == CUDA_SUCCESS)
                rc = cuMemAlloc(&p, 1 << 20);
            if (rc != CUDA_SUCCESS)
                fprintf(stderr, "child: %d\n", rc);
            _exit(rc == CUDA_SUCCESS ? 0 : 10);
        }
        double took = now_ms() - t0;
        int st = 0;
        waitpid(pid, &st, 0);
        printf("fork_ms=%.0f child=%d\n", took, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        fflush(stdout);
        _exit(0); /* the waiting thread never returns */
    }
    if (!strcmp(mode, "orphan")) {
        CUcontext c;
        CUdeviceptr p;
        need(cuCtxCreate(&c, 0, 0), "cuCtxCreate");
        need(cuMemAlloc(&p, 32 << 20), "cuMemAlloc");
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            /* Neither exec nor a call: it only holds what it inherited. */
            close(1);
            close(2);
            sleep(4);
            _exit(0);
        }
        printf("child_pid=%d\n", (int)pid);
        return 0;
    }
    if (!strcmp(mode, "restart") && argc > 2) {
        CUcontext c;
        CUdeviceptr p;
        need(cuCtxCreate(&c, 0, 0), "cuCtxCreate");
        need(cuMemAlloc(&p, 1 << 20), "cuMemAlloc");
        printf("ready\n");
        fflush(stdout);
        struct stat sb;
        for (int i = 0; i < 3000 && stat(argv[2], &sb) != 0; i++)
            usleep(10000);
        CUresult a1 = cuMemAlloc(&p, 1 << 20);
        CUresult a2 = cuMemAlloc(&p, 1 << 20);
        CUresult s = cuCtxSynchronize();
        printf("alloc1=%d alloc2=%d sync=%d\n", a1, a2, s);
        return 0;
    }
    if (!strcmp(mode, "deadline")) {
        CUcontext c;
        CUmodule m;
        CUfunction f;
        CUdeviceptr p;
        need(cuCtxCreate(&c, 0, 0), "cuCtxCreate");
        need(cuModuleLoadData(&m, SPIN), "cuModuleLoadData");
        need(cuModuleGetFunction(&f, m, "spin"), "cuModuleGetFunction");
        need(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), "cuLaunchKernel");
        double t0 = now_ms();
        CUresult s = cuCtxSynchronize();
        double took = now_ms() - t0;
        printf("sync=%d ms=%.0f alloc=%d\n", s, took, cuMemAlloc(&p, 1 << 20));
        return 0;
    }
    if (!strcmp(mode, "fresh")) {
        CUcontext c;
        CUdeviceptr p;
        CUresult rc = cuCtxCreate(&c, 0, 0);
        if (rc == CUDA_SUCCESS)
            rc = cuMemAlloc(&p, 1 << 20);
        printf("fresh=%d\n", rc);
        return 0;
    }
    return 2;
}
