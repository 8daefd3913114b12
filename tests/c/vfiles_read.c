/*
 * Reads vgpu's virtual files through every libc path GPU software uses, and
 * real files through the same calls, comparing the latter with raw system
 * calls (which no libc hook can see).
 *
 *   vfiles_read          all checks: virtual files, pass-through, 8 threads,
 *                        fork, fork+exec of "vfiles_read child"
 *   vfiles_read child    a short subset (run by the exec'd child)
 *   vfiles_read real     pass-through checks only
 *
 * Expects LD_PRELOAD=<library with the hooks> and VGPU_VFILES_TEST=1 for the
 * first two; VGPU_TEST_BDF overrides the address (default 0000:00:05.0).
 * Prints "FAIL: ..." per failed check, "TREE=<dir>" for each process's
 * private directory, and exits 0 only when every check passed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern int __open_2(const char *, int);
extern int __openat_2(int, const char *, int);

static atomic_int failures;
static const char *bdf = "0000:00:05.0";
static char devdir[256];   /* /sys/bus/pci/devices/<bdf> */
static char sysdev[256];   /* /sys/devices/pci0000:00/<bdf> */
static char infopath[256]; /* /proc/driver/nvidia/gpus/<bdf>/information */

static void fail(const char *fmt, ...) {
    va_list ap;
    char msg[1024];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("FAIL: %s\n", msg);
    fflush(stdout);
    atomic_fetch_add(&failures, 1);
}

#define CHECK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

static const char *attr(const char *name) {
    static __thread char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", devdir, name);
    return buf;
}

/* ---- raw system calls: the ground truth for pass-through ---- */

static long raw_read_file(const char *path, char *buf, size_t cap) {
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = 0;
    for (;;) {
        long r = syscall(SYS_read, fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        if (n == cap - 1) break;
    }
    buf[n] = 0;
    syscall(SYS_close, fd);
    return (long)n;
}

struct linux_dirent64 {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Names in a directory, '.' and '..' excluded; returns count. */
static int raw_list(const char *path, char names[][64], int max) {
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[8192];
    int n = 0;
    for (;;) {
        long r = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (r <= 0) break;
        for (long off = 0; off < r;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
            if (strcmp(d->d_name, ".") && strcmp(d->d_name, "..") && n < max)
                snprintf(names[n++], 64, "%s", d->d_name);
            off += d->d_reclen;
        }
    }
    syscall(SYS_close, fd);
    return n;
}

static int raw_stat(const char *path, struct stat *st, int flags) {
    return (int)syscall(SYS_newfstatat, AT_FDCWD, path, st, flags);
}

/* ---- libc helpers ---- */

static long read_fd_all(int fd, char *buf, size_t cap) {
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        if (n == cap - 1) break;
    }
    buf[n] = 0;
    return (long)n;
}

static int read_file(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    read_fd_all(fd, buf, cap);
    close(fd);
    return 0;
}

static void expect_file(const char *how, const char *path, const char *want) {
    char got[8192];
    if (read_file(path, got, sizeof got) != 0) {
        fail("%s: open %s: %s", how, path, strerror(errno));
        return;
    }
    CHECK(strcmp(got, want) == 0, "%s: %s is \"%s\", want \"%s\"", how, path, got, want);
}

static void expect_fd(const char *how, int fd, const char *want) {
    char got[256];
    if (fd < 0) {
        fail("%s: open failed: %s", how, strerror(errno));
        return;
    }
    read_fd_all(fd, got, sizeof got);
    close(fd);
    CHECK(strcmp(got, want) == 0, "%s: got \"%s\", want \"%s\"", how, got, want);
}

static int has_name(DIR *d, const char *name, int *count_out) {
    int count = 0, total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        total++;
        if (!strcmp(e->d_name, name)) count++;
    }
    if (count_out) *count_out = total;
    return count;
}

/* ---- the virtual files ---- */

static void check_read_family(void) {
    char buf[8192];

    /* read(2) */
    if (read_file("/proc/driver/nvidia/version", buf, sizeof buf) != 0) {
        fail("read: open version: %s", strerror(errno));
    } else {
        CHECK(strncmp(buf, "NVRM version: NVIDIA UNIX ", 26) == 0, "read: version starts \"%.40s\"", buf);
        CHECK(strstr(buf, " Kernel Module  590.48.01  ") != NULL, "read: no driver version in \"%s\"", buf);
        CHECK(strstr(buf, "\nGCC version:  ") != NULL, "read: no GCC line in \"%s\"", buf);
    }
    expect_file("read", "/sys/module/nvidia/version", "590.48.01\n");

    /* every open variant */
    expect_fd("open64", open64(attr("vendor"), O_RDONLY), "0x10de\n");
    expect_fd("openat", openat(AT_FDCWD, attr("vendor"), O_RDONLY), "0x10de\n");
    expect_fd("openat64", openat64(AT_FDCWD, attr("vendor"), O_RDONLY | O_CLOEXEC), "0x10de\n");
    expect_fd("__open_2", __open_2(attr("vendor"), O_RDONLY), "0x10de\n");
    expect_fd("__openat_2", __openat_2(AT_FDCWD, attr("vendor"), O_RDONLY), "0x10de\n");
    expect_fd("syscall(openat) on the device dir, then openat(dirfd, \"vendor\") through libc",
              openat(open(devdir, O_RDONLY | O_DIRECTORY), "vendor", O_RDONLY), "0x10de\n");

    /* pread */
    int fd = open(attr("vendor"), O_RDONLY);
    if (fd < 0) {
        fail("pread: open: %s", strerror(errno));
    } else {
        char p[16] = {0};
        ssize_t n = pread(fd, p, sizeof p - 1, 2);
        CHECK(n == 5 && !strcmp(p, "10de\n"), "pread: got %zd \"%s\"", n, p);
        struct stat st;
        CHECK(fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 7,
              "fstat: vendor mode %o size %lld", st.st_mode, (long long)st.st_size);
        char link[512], tree[512];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t l = readlink(link, tree, sizeof tree - 1);
        if (l > 0) {
            tree[l] = 0;
            char *end = strstr(tree, "/root/");
            if (end) *end = 0;
            printf("TREE=%s\n", tree);
        }
        close(fd);
    }

    /* fread */
    FILE *f = fopen(attr("device"), "r");
    if (!f) {
        fail("fread: fopen device: %s", strerror(errno));
    } else {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        CHECK(!strcmp(buf, "0x2331\n"), "fread: device \"%s\"", buf);
        fclose(f);
    }
    f = fopen64(attr("subsystem_vendor"), "re");
    CHECK(f != NULL, "fopen64: %s", strerror(errno));
    if (f) {
        CHECK(fgets(buf, sizeof buf, f) && !strcmp(buf, "0x10de\n"), "fopen64: \"%s\"", buf);
        f = freopen(attr("revision"), "r", f);
        CHECK(f && fgets(buf, sizeof buf, f) && !strcmp(buf, "0xa1\n"), "freopen: \"%s\"", buf);
        if (f) fclose(f);
    }

    /* fgets over the information file */
    f = fopen(infopath, "r");
    if (!f) {
        fail("fgets: fopen %s: %s", infopath, strerror(errno));
    } else {
        char want_bus[128];
        snprintf(want_bus, sizeof want_bus, "Bus Location: \t %s\n", bdf);
        int model = 0, uuid = 0, minor = 0, bus = 0, excluded = 0;
        while (fgets(buf, sizeof buf, f)) {
            model += !strcmp(buf, "Model: \t\t NVIDIA H100 PCIe\n");
            uuid += !strcmp(buf, "GPU UUID: \t GPU-6b1e3c2a-91f4-4d8e-b7a0-5c2f8e41d937\n");
            minor += !strcmp(buf, "Device Minor: \t 0\n");
            bus += !strcmp(buf, want_bus);
            excluded += !strcmp(buf, "GPU Excluded:\t No\n");
        }
        CHECK(model == 1 && uuid == 1 && minor == 1 && bus == 1 && excluded == 1,
              "fgets: information lines model=%d uuid=%d minor=%d bus=%d excluded=%d", model, uuid,
              minor, bus, excluded);
        fclose(f);
    }

    /* fscanf */
    unsigned cls = 0, width = 0, ssdev = 0;
    int numa = 0;
    f = fopen(attr("class"), "r");
    CHECK(f && fscanf(f, "%x", &cls) == 1 && cls == 0x030200, "fscanf: class %x", cls);
    if (f) fclose(f);
    f = fopen(attr("numa_node"), "r");
    CHECK(f && fscanf(f, "%d", &numa) == 1 && numa == -1, "fscanf: numa_node %d", numa);
    if (f) fclose(f);
    f = fopen(attr("current_link_width"), "r");
    CHECK(f && fscanf(f, "%u", &width) == 1 && width == 16, "fscanf: link width %u", width);
    if (f) fclose(f);
    f = fopen(attr("subsystem_device"), "r");
    CHECK(f && fscanf(f, "%x", &ssdev) == 1 && ssdev == 0x16c1, "fscanf: subsystem_device %x", ssdev);
    if (f) fclose(f);
    f = fopen("/proc/driver/nvidia/params", "r");
    if (f) {
        char name[32];
        unsigned v, mode = 0;
        while (fscanf(f, "%31[^:]: %u\n", name, &v) == 2)
            if (!strcmp(name, "DeviceFileMode")) mode = v;
        CHECK(mode == 438, "fscanf: params DeviceFileMode %u (nvidia-modprobe's loop)", mode);
        fclose(f);
    } else {
        fail("fscanf: fopen params: %s", strerror(errno));
    }

    /* getline */
    f = fopen(attr("uevent"), "r");
    if (!f) {
        fail("getline: fopen uevent: %s", strerror(errno));
    } else {
        char *line = NULL, want_slot[128];
        size_t cap = 0;
        int drv = 0, id = 0, slot = 0;
        snprintf(want_slot, sizeof want_slot, "PCI_SLOT_NAME=%s\n", bdf);
        while (getline(&line, &cap, f) > 0) {
            drv += !strcmp(line, "DRIVER=nvidia\n");
            id += !strcmp(line, "PCI_ID=10DE:2331\n");
            slot += !strcmp(line, want_slot);
        }
        CHECK(drv == 1 && id == 1 && slot == 1, "getline: uevent driver=%d id=%d slot=%d", drv, id, slot);
        free(line);
        fclose(f);
    }

    /* mmap */
    fd = open("/proc/driver/nvidia/params", O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0) {
        fail("mmap: open params: %s", strerror(errno));
    } else {
        char *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        CHECK(m != MAP_FAILED && memmem(m, (size_t)st.st_size, "\nModifyDeviceFiles: 1\n", 22),
              "mmap: params lacks ModifyDeviceFiles");
        if (m != MAP_FAILED) munmap(m, (size_t)st.st_size);
    }
    if (fd >= 0) close(fd);

    /* the GPU node opens (onto /dev/null, documented) */
    fd = open("/dev/nvidia0", O_RDWR);
    CHECK(fd >= 0, "open /dev/nvidia0 O_RDWR: %s", strerror(errno));
    if (fd >= 0) close(fd);
    fd = open("/dev/nvidiactl", O_RDWR);
    CHECK(fd >= 0, "open /dev/nvidiactl: %s", strerror(errno));
    if (fd >= 0) close(fd);
}

static void expect_chr(const char *how, const struct stat *st, unsigned maj, unsigned min) {
    CHECK(S_ISCHR(st->st_mode) && (st->st_mode & 0777) == 0666 && major(st->st_rdev) == maj &&
              minor(st->st_rdev) == min,
          "%s: mode %o rdev %u:%u, want chr 0666 %u:%u", how, st->st_mode, major(st->st_rdev),
          minor(st->st_rdev), maj, min);
}

typedef int (*xstat_fn)(int, const char *, struct stat *);

static void check_stat_family(void) {
    struct stat st;
    memset(&st, 0, sizeof st);
    CHECK(stat("/dev/nvidia0", &st) == 0, "stat /dev/nvidia0: %s", strerror(errno));
    expect_chr("stat /dev/nvidia0", &st, 195, 0);
    CHECK(stat("/dev/nvidiactl", &st) == 0, "stat /dev/nvidiactl: %s", strerror(errno));
    expect_chr("stat /dev/nvidiactl", &st, 195, 255);
    CHECK(stat("/dev/nvidia-uvm", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) != 195,
          "stat /dev/nvidia-uvm: mode %o major %u", st.st_mode, major(st.st_rdev));
    errno = 0;
    CHECK(stat("/dev/nvidia1", &st) == -1 && errno == ENOENT, "stat /dev/nvidia1 should be ENOENT");
    CHECK(lstat("/dev/nvidia0", &st) == 0, "lstat /dev/nvidia0: %s", strerror(errno));
    expect_chr("lstat /dev/nvidia0", &st, 195, 0);
    struct stat64 st64;
    CHECK(stat64("/dev/nvidia0", &st64) == 0 && S_ISCHR(st64.st_mode) && major(st64.st_rdev) == 195,
          "stat64 /dev/nvidia0");
    CHECK(fstatat(AT_FDCWD, "/dev/nvidia0", &st, 0) == 0, "fstatat /dev/nvidia0: %s", strerror(errno));
    expect_chr("fstatat /dev/nvidia0", &st, 195, 0);

    CHECK(stat(devdir, &st) == 0 && S_ISDIR(st.st_mode), "stat %s: not a directory", devdir);
    CHECK(lstat(devdir, &st) == 0 && S_ISLNK(st.st_mode), "lstat %s: not a symlink", devdir);
    CHECK(fstatat(AT_FDCWD, devdir, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode),
          "fstatat nofollow %s", devdir);
    CHECK(lstat(attr("driver"), &st) == 0 && S_ISLNK(st.st_mode), "lstat driver: not a symlink");
    CHECK(stat(attr("driver"), &st) == 0 && S_ISDIR(st.st_mode), "stat driver: not a directory");
    CHECK(stat("/proc/driver/nvidia/version", &st) == 0 && S_ISREG(st.st_mode), "stat version");
    CHECK(lstat64(attr("vendor"), &st64) == 0 && st64.st_size == 7, "lstat64 vendor");

    struct statx sx;
    memset(&sx, 0, sizeof sx);
    CHECK(statx(AT_FDCWD, "/dev/nvidia0", 0, STATX_BASIC_STATS, &sx) == 0 && S_ISCHR(sx.stx_mode) &&
              sx.stx_rdev_major == 195 && sx.stx_rdev_minor == 0,
          "statx /dev/nvidia0: mode %o rdev %u:%u", sx.stx_mode, sx.stx_rdev_major, sx.stx_rdev_minor);
    CHECK(statx(AT_FDCWD, attr("vendor"), 0, STATX_SIZE, &sx) == 0 && sx.stx_size == 7,
          "statx vendor size %llu", (unsigned long long)sx.stx_size);

    /* Old binaries call __xstat; glibc >= 2.33 has it compat-only, so
     * resolve it the way such a binary's reference binds: by name. */
    xstat_fn x = (xstat_fn)dlsym(RTLD_DEFAULT, "__xstat");
    CHECK(x != NULL, "__xstat not exported by the preloaded library");
    if (x) {
        CHECK(x(1, "/dev/nvidia0", &st) == 0, "__xstat /dev/nvidia0: %s", strerror(errno));
        expect_chr("__xstat /dev/nvidia0", &st, 195, 0);
        struct stat raw;
        CHECK(x(1, "/etc/hostname", &st) == 0 && raw_stat("/etc/hostname", &raw, 0) == 0 &&
                  st.st_ino == raw.st_ino && st.st_size == raw.st_size,
              "__xstat /etc/hostname differs from the raw syscall");
    }
    xstat_fn lx = (xstat_fn)dlsym(RTLD_DEFAULT, "__lxstat");
    CHECK(lx && lx(1, devdir, &st) == 0 && S_ISLNK(st.st_mode), "__lxstat %s", devdir);

    /* access family */
    CHECK(access("/proc/driver/nvidia/version", R_OK) == 0, "access version: %s", strerror(errno));
    CHECK(access("/dev/nvidia0", R_OK | W_OK) == 0, "access /dev/nvidia0 rw: %s", strerror(errno));
    CHECK(access("/dev/nvidia1", F_OK) == -1, "access /dev/nvidia1 should fail");
    CHECK(faccessat(AT_FDCWD, attr("vendor"), R_OK, 0) == 0, "faccessat vendor: %s", strerror(errno));
    CHECK(euidaccess(infopath, R_OK) == 0, "euidaccess information: %s", strerror(errno));
    CHECK(access(attr("no_such_attribute"), F_OK) == -1, "access of a missing attribute succeeded");
}

static int cmp_names(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

static void check_listing(void) {
    static char raw[256][64];
    int nraw = raw_list("/sys/bus/pci/devices", raw, 256);
    CHECK(nraw > 0, "raw listing of /sys/bus/pci/devices failed");
    int real_has_bdf = 0;
    for (int i = 0; i < nraw; i++) real_has_bdf |= !strcmp(raw[i], bdf);

    DIR *d = opendir("/sys/bus/pci/devices");
    if (!d) {
        fail("opendir /sys/bus/pci/devices: %s", strerror(errno));
        return;
    }
    int total = 0;
    int mine = has_name(d, bdf, &total);
    CHECK(mine == 1, "readdir: %s listed %d times", bdf, mine);
    CHECK(total == nraw + !real_has_bdf, "readdir: %d entries, real %d (bdf real: %d)", total, nraw,
          real_has_bdf);
    for (int i = 0; i < nraw; i++) {
        rewinddir(d);
        CHECK(has_name(d, raw[i], NULL) == 1, "readdir: real entry %s missing", raw[i]);
    }
    closedir(d);

    struct dirent **list;
    int n = scandir("/sys/bus/pci/devices", &list, NULL, cmp_names);
    CHECK(n == nraw + !real_has_bdf + 2, "scandir: %d entries", n);
    int seen = 0;
    for (int i = 0; i < n; i++) {
        seen += !strcmp(list[i]->d_name, bdf);
        free(list[i]);
    }
    if (n >= 0) free(list);
    CHECK(seen == 1, "scandir: %s seen %d times", bdf, seen);

    d = opendir("/proc/driver/nvidia/gpus");
    CHECK(d && has_name(d, bdf, NULL) == 1, "opendir gpus: %s missing", bdf);
    if (d) closedir(d);
    d = opendir(devdir);
    if (d) {
        int vendor = 0, driver = 0, other = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            vendor += !strcmp(e->d_name, "vendor");
            driver += !strcmp(e->d_name, "driver");
            other += !strncmp(e->d_name, "virtio", 6);
        }
        CHECK(vendor == 1 && driver == 1 && other == 0, "opendir %s: vendor=%d driver=%d virtio=%d",
              devdir, vendor, driver, other);
        closedir(d);
    } else {
        fail("opendir %s: %s", devdir, strerror(errno));
    }

    /* A real entry reached through the merged listing stays real. */
    for (int i = 0; i < nraw; i++) {
        if (!strcmp(raw[i], bdf)) continue;
        char p[256], a[256], b[256];
        snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/vendor", raw[i]);
        CHECK(read_file(p, a, sizeof a) == 0 && raw_read_file(p, b, sizeof b) >= 0 && !strcmp(a, b),
              "real %s differs from the raw read", p);
        int dfd = open("/sys/bus/pci/devices", O_RDONLY | O_DIRECTORY);
        snprintf(p, sizeof p, "%s/vendor", raw[i]);
        int fd = openat(dfd, p, O_RDONLY);
        CHECK(fd >= 0 && read_fd_all(fd, a, sizeof a) > 0 && !strcmp(a, b),
              "openat(merged dir, %s) differs from the real device", p);
        if (fd >= 0) close(fd);
        if (dfd >= 0) close(dfd);
        break;
    }
}

static void expect_link(const char *how, const char *path, const char *want) {
    char buf[512];
    ssize_t n = readlink(path, buf, sizeof buf - 1);
    if (n < 0) {
        fail("%s: readlink %s: %s", how, path, strerror(errno));
        return;
    }
    buf[n] = 0;
    CHECK(!strcmp(buf, want), "%s: readlink %s = \"%s\", want \"%s\"", how, path, buf, want);
}

static void expect_realpath(const char *path, const char *want) {
    char buf[PATH_MAX];
    char *r = realpath(path, buf);
    CHECK(r && !strcmp(r, want), "realpath %s = \"%s\", want \"%s\" (%s)", path, r ? r : "(null)", want,
          r ? "" : strerror(errno));
    char *m = realpath(path, NULL);
    CHECK(m && !strcmp(m, want), "realpath(%s, NULL) = \"%s\"", path, m ? m : "(null)");
    free(m);
    m = canonicalize_file_name(path);
    CHECK(m && !strcmp(m, want), "canonicalize_file_name(%s) = \"%s\"", path, m ? m : "(null)");
    free(m);
}

static void check_links(void) {
    char want[512], p[512];
    snprintf(want, sizeof want, "../../../devices/pci0000:00/%s", bdf);
    expect_link("bus link", devdir, want);
    expect_link("driver link", attr("driver"), "../../../bus/pci/drivers/nvidia");
    snprintf(p, sizeof p, "/sys/bus/pci/drivers/nvidia/%s", bdf);
    snprintf(want, sizeof want, "../../../../devices/pci0000:00/%s", bdf);
    expect_link("driver's device link", p, want);
    char buf[256];
    ssize_t n = readlinkat(AT_FDCWD, attr("driver"), buf, sizeof buf - 1);
    CHECK(n == 31 && !memcmp(buf, "../../../bus/pci/drivers/nvidia", 31), "readlinkat driver");
    errno = 0;
    CHECK(readlink("/dev/nvidia0", buf, sizeof buf) == -1 && errno == EINVAL, "readlink /dev/nvidia0");

    expect_realpath(devdir, sysdev);
    expect_realpath(attr("driver"), "/sys/bus/pci/drivers/nvidia");
    expect_realpath(p, sysdev);
    expect_realpath("/sys/bus/pci/devices", "/sys/bus/pci/devices");
    expect_realpath("/dev/nvidia0", "/dev/nvidia0");
    snprintf(want, sizeof want, "%s/vendor", sysdev);
    expect_realpath(attr("vendor"), want);
    /* the realpath answer itself names the virtual device */
    snprintf(p, sizeof p, "%s/vendor", sysdev);
    expect_file("via realpath", p, "0x10de\n");
}

static void check_paths(void) {
    char p[512], buf[256];
    FILE *f = fopen("//proc//driver/nvidia/./version", "r");
    CHECK(f && fgets(buf, sizeof buf, f) && !strncmp(buf, "NVRM version:", 13), "//proc//driver path");
    if (f) fclose(f);
    f = fopen("/usr/../proc/self/../driver/nvidia/version", "r");
    CHECK(f && fgets(buf, sizeof buf, f) && !strncmp(buf, "NVRM version:", 13), "/usr/../proc/self/../driver path");
    if (f) fclose(f);
    snprintf(p, sizeof p, "/sys/bus/pci/devices/../devices/%s/vendor", bdf);
    expect_file("dotdot", p, "0x10de\n");
    snprintf(p, sizeof p, "/sys/./bus/pci/devices/%s/../%s/device", bdf, bdf);
    expect_file("dot", p, "0x2331\n");

    int here = open(".", O_RDONLY | O_DIRECTORY);
    CHECK(chdir("/sys/bus") == 0, "chdir /sys/bus");
    snprintf(p, sizeof p, "pci/devices/%s/vendor", bdf);
    expect_file("relative", p, "0x10de\n");
    struct stat st;
    CHECK(stat("../../dev/nvidia0", &st) == 0 && S_ISCHR(st.st_mode), "relative stat ../../dev/nvidia0");
    CHECK(chdir(devdir) == 0, "chdir %s: %s", devdir, strerror(errno));
    expect_file("relative in device dir", "vendor", "0x10de\n");
    expect_file("relative ./", "./device", "0x2331\n");
    if (here >= 0) {
        CHECK(fchdir(here) == 0, "fchdir back");
        close(here);
    }
}

/* ---- pass-through ---- */

static void check_real(void) {
    char a[8192], b[8192];
    long n = raw_read_file("/etc/hostname", b, sizeof b);
    if (n >= 0) {
        CHECK(read_file("/etc/hostname", a, sizeof a) == 0 && !strcmp(a, b), "real /etc/hostname differs");
        FILE *f = fopen("/etc/hostname", "r");
        CHECK(f && fgets(a, sizeof a, f) && !strncmp(a, b, strlen(a)), "fgets /etc/hostname differs");
        if (f) fclose(f);
        struct stat s1, s2;
        CHECK(stat("/etc/hostname", &s1) == 0 && raw_stat("/etc/hostname", &s2, 0) == 0 &&
                  s1.st_ino == s2.st_ino && s1.st_size == s2.st_size && s1.st_mode == s2.st_mode,
              "stat /etc/hostname differs from the raw syscall");
        CHECK(access("/etc/hostname", R_OK) == 0, "access /etc/hostname");
    }
    errno = 0;
    CHECK(open("/nonexistent/vgpu", O_RDONLY) == -1 && errno == ENOENT, "open of a missing path: errno %d", errno);
    errno = 0;
    CHECK(stat("/proc/driver/nvidia-nonexistent", &(struct stat){0}) == -1 && errno == ENOENT,
          "stat near the virtual prefix: errno %d", errno);

    CHECK(read_file("/proc/self/status", a, sizeof a) == 0 && !strncmp(a, "Name:\t", 6),
          "/proc/self/status: \"%.20s\"", a);
    int fd = open("/proc/self/status", O_RDONLY);
    CHECK(fd >= 0 && pread(fd, a, 6, 0) == 6 && !strncmp(a, "Name:\t", 6), "pread /proc/self/status");
    if (fd >= 0) close(fd);

    struct stat st, raw;
    CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 &&
              minor(st.st_rdev) == 3,
          "stat /dev/null changed");
    CHECK(stat("/sys/bus/pci", &st) == 0 && raw_stat("/sys/bus/pci", &raw, 0) == 0 && st.st_ino == raw.st_ino,
          "stat /sys/bus/pci differs");
    DIR *d = opendir("/sys/bus/pci");
    CHECK(d && has_name(d, "devices", NULL) == 1, "opendir /sys/bus/pci");
    if (d) closedir(d);

    static char names[256][64];
    int nraw = raw_list("/sys/bus/pci/devices", names, 256);
    for (int i = 0; i < nraw; i++) {
        if (!strcmp(names[i], bdf)) continue;
        char p[256], want[256], got[256];
        snprintf(p, sizeof p, "/sys/bus/pci/devices/%s", names[i]);
        long l = syscall(SYS_readlinkat, AT_FDCWD, p, want, sizeof want - 1);
        if (l > 0) {
            want[l] = 0;
            ssize_t g = readlink(p, got, sizeof got - 1);
            if (g >= 0) got[g] = 0;
            CHECK(g == l && !strcmp(got, want), "readlink real %s: \"%s\" vs \"%s\"", p, g >= 0 ? got : "", want);
        }
        char *r = realpath(p, NULL);
        CHECK(r && !strncmp(r, "/sys/devices/", 13) && stat(r, &st) == 0 && S_ISDIR(st.st_mode),
              "realpath real %s = %s", p, r ? r : "(null)");
        free(r);
        snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/vendor", names[i]);
        CHECK(raw_read_file(p, want, sizeof want) > 0 && read_file(p, got, sizeof got) == 0 && !strcmp(got, want),
              "real %s differs", p);
    }
}

/* ---- concurrency and processes ---- */

static void *hammer(void *arg) {
    (void)arg;
    char buf[64], host[256], want_host[256];
    long hn = raw_read_file("/etc/hostname", want_host, sizeof want_host);
    for (int i = 0; i < 1000; i++) {
        int fd = open(attr("vendor"), O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0) close(fd);
        if (n != 7 || memcmp(buf, "0x10de\n", 7)) {
            fail("thread: vendor read %zd at iteration %d", n, i);
            break;
        }
        struct stat st;
        if (stat("/dev/nvidia0", &st) != 0 || !S_ISCHR(st.st_mode)) {
            fail("thread: stat /dev/nvidia0 at iteration %d", i);
            break;
        }
        if (hn >= 0 && (read_file("/etc/hostname", host, sizeof host) != 0 || strcmp(host, want_host))) {
            fail("thread: /etc/hostname at iteration %d", i);
            break;
        }
    }
    return NULL;
}

static void check_threads(void) {
    pthread_t t[8];
    for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, hammer, NULL);
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
}

static void child_checks(void) {
    expect_file("child", attr("vendor"), "0x10de\n");
    struct stat st;
    CHECK(stat("/dev/nvidia0", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 195,
          "child: stat /dev/nvidia0");
    char tree[512], link[64];
    int fd = open("/proc/driver/nvidia/version", O_RDONLY);
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t l = fd >= 0 ? readlink(link, tree, sizeof tree - 1) : -1;
    CHECK(l > 0, "child: version not open");
    if (l > 0) {
        tree[l] = 0;
        char *end = strstr(tree, "/root/");
        if (end) *end = 0;
        printf("TREE=%s\n", tree);
    }
    if (fd >= 0) close(fd);
}

static void check_processes(const char *self) {
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        child_checks();
        /* exit, not _exit: the child's own tree is removed by its atexit. */
        exit(atomic_load(&failures) ? 1 : 0);
    }
    int status = 0;
    waitpid(p, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "forked child failed (status %d)", status);

    fflush(stdout);
    p = fork();
    if (p == 0) {
        char *argv[] = {(char *)self, "child", NULL};
        execv(self, argv);
        _exit(127);
    }
    waitpid(p, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork+exec child failed (status %d)", status);
    /* the parent's files survive its children's exits */
    expect_file("after children", attr("vendor"), "0x10de\n");
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "all";
    if (getenv("VGPU_TEST_BDF")) bdf = getenv("VGPU_TEST_BDF");
    snprintf(devdir, sizeof devdir, "/sys/bus/pci/devices/%s", bdf);
    snprintf(sysdev, sizeof sysdev, "/sys/devices/pci%.7s/%s", bdf, bdf);
    snprintf(infopath, sizeof infopath, "/proc/driver/nvidia/gpus/%s/information", bdf);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (!strcmp(mode, "child")) {
        child_checks();
    } else if (!strcmp(mode, "real")) {
        check_real();
    } else {
        check_read_family();
        check_stat_family();
        check_listing();
        check_links();
        check_paths();
        check_real();
        check_threads();
        check_processes(argv[0]);
    }
    int f = atomic_load(&failures);
    printf("%s: %s, %d failure(s)\n", argv[0], mode, f);
    return f ? 1 : 0;
}
