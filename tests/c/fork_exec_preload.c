/* A parent that fork()s and exec()s a child with its environment inherited, as
 * Ollama starts its discovery children (LD_PRELOAD is always inherited;
 * docs/clients.md "What every generation shares").
 *
 * usage: fork_exec_preload [--expect-preloaded] [--parent-init] PROGRAM [ARGS...]
 *   --expect-preloaded  fail unless libcuda.so.1 and libnvidia-ml.so.1 are
 *                       already loaded in the parent (dlopen RTLD_NOLOAD), i.e.
 *                       LD_PRELOAD loaded the shims and their SONAMEs match
 *   --parent-init       call cuInit(0) in the parent before forking (like
 *                       ollama <= 0.12.3, whose serve process already uses CUDA)
 * Exits with the child's exit status (128+signal if it was killed). */
#include <sys/wait.h>
#include <unistd.h>

#include "vgpu_test.h"

extern char **environ;
typedef CUresult (*cuInit_fn)(unsigned int);

int main(int argc, char **argv) {
    int expect_preloaded = 0, parent_init = 0, i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--expect-preloaded") == 0)
            expect_preloaded = 1;
        else if (strcmp(argv[i], "--parent-init") == 0)
            parent_init = 1;
        else
            fail("unknown option %s", argv[i]);
    }
    if (i >= argc)
        fail("usage: fork_exec_preload [--expect-preloaded] [--parent-init] PROGRAM [ARGS...]");
    const char *pre = getenv("LD_PRELOAD");
    fprintf(stderr, "parent: LD_PRELOAD=%s\n", pre ? pre : "(unset)");

    if (expect_preloaded) {
        if (!dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD))
            fail("libcuda.so.1 is not loaded in the parent (LD_PRELOAD or SONAME wrong)");
        if (!dlopen("libnvidia-ml.so.1", RTLD_LAZY | RTLD_NOLOAD))
            fail("libnvidia-ml.so.1 is not loaded in the parent (LD_PRELOAD or SONAME wrong)");
    }
    if (parent_init) {
        void *cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!cu)
            fail("parent: dlopen(libcuda.so.1): %s", dlerror());
        REQUIRE_SYM(cu, cuInit);
        CHECK(cuInit(0));
        fprintf(stderr, "parent: cuInit(0)=0\n");
    }
    fflush(NULL);

    pid_t pid = fork();
    if (pid < 0)
        fail("fork failed");
    if (pid == 0) {
        execve(argv[i], &argv[i], environ);
        perror("execve");
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        fail("waitpid failed");
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "parent: child killed by signal %d\n", WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    fprintf(stderr, "parent: child exited with %d\n", WEXITSTATUS(status));
    return WEXITSTATUS(status);
}
