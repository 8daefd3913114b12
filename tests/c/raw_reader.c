/*
 * Looks at the GPU's files the way Go's runtime does: raw system calls only
 * (openat, read, newfstatat, getdents64, readlinkat), so no libc hook can
 * answer. What it prints is what the file system itself holds.
 *
 * usage: raw_reader [BDF]   (default 0000:00:05.0)
 * stdout, one `key=value` per line, a key absent when the file is missing:
 *   version=<first line of /proc/driver/nvidia/version>
 *   info_uuid=<GPU UUID of /proc/driver/nvidia/gpus/<BDF>/information>
 *   vendor= device= class=   (sysfs attributes of the function)
 *   listed=0|1               (BDF in the getdents64 listing of /sys/bus/pci/devices)
 *   driver_link=<readlinkat of /sys/bus/pci/devices/<BDF>/driver>
 *   dev_nvidia0=chr MAJOR:MINOR | other MODE
 * Exit 0 unless a system call fails in an unexpected way.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct dirent64_raw {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Reads a whole (small) file; -1 when it cannot be opened. */
static long raw_read(const char *path, char *buf, size_t cap) {
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = 0;
    while (n < cap - 1) {
        long r = syscall(SYS_read, fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    syscall(SYS_close, fd);
    return (long)n;
}

static void first_line(char *s) {
    char *nl = strchr(s, '\n');
    if (nl) *nl = 0;
}

static void attr(const char *bdf, const char *name) {
    char path[512], buf[256];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/%s", bdf, name);
    if (raw_read(path, buf, sizeof buf) < 0) return;
    first_line(buf);
    printf("%s=%s\n", name, buf);
}

int main(int argc, char **argv) {
    const char *bdf = argc > 1 ? argv[1] : "0000:00:05.0";
    char buf[4096], path[512];

    if (raw_read("/proc/driver/nvidia/version", buf, sizeof buf) >= 0) {
        first_line(buf);
        printf("version=%s\n", buf);
    }

    snprintf(path, sizeof path, "/proc/driver/nvidia/gpus/%s/information", bdf);
    if (raw_read(path, buf, sizeof buf) >= 0) {
        char *u = strstr(buf, "GPU UUID:");
        if (u) {
            u += strlen("GPU UUID:");
            u += strspn(u, " \t");
            first_line(u);
            printf("info_uuid=%s\n", u);
        }
    }

    attr(bdf, "vendor");
    attr(bdf, "device");
    attr(bdf, "class");

    int dfd = (int)syscall(SYS_openat, AT_FDCWD, "/sys/bus/pci/devices",
                           O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        perror("openat /sys/bus/pci/devices");
        return 1;
    }
    int listed = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n < 0) {
            perror("getdents64");
            return 1;
        }
        if (n == 0) break;
        for (long off = 0; off < n;) {
            struct dirent64_raw *d = (struct dirent64_raw *)(buf + off);
            if (strcmp(d->d_name, bdf) == 0) listed = 1;
            off += d->d_reclen;
        }
    }
    syscall(SYS_close, dfd);
    printf("listed=%d\n", listed);

    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/driver", bdf);
    long len = syscall(SYS_readlinkat, AT_FDCWD, path, buf, sizeof buf - 1);
    if (len >= 0) {
        buf[len] = 0;
        printf("driver_link=%s\n", buf);
    }

    struct stat st;
    if (syscall(SYS_newfstatat, AT_FDCWD, "/dev/nvidia0", &st, 0) == 0) {
        if (S_ISCHR(st.st_mode))
            printf("dev_nvidia0=chr %u:%u\n", major(st.st_rdev), minor(st.st_rdev));
        else
            printf("dev_nvidia0=other %o\n", st.st_mode);
    }
    return 0;
}
