/* Replays the driver probe of Ollama v0.30+'s `ollama gpu-discover`
 * (discover/native_probe*.go; docs/clients.md "Discovery through llama-server"
 * and the checks that follow it).
 *
 * usage: ollama_gpu_discover_030 [EXPECTED_PCI_ID]
 *        (default $VGPU_PCI_BUS_ID, else 0000:00:05.0)
 * stdout:
 *   driver cuda=13.0 nvidia="570.xx.yy" nvidia_major=570 count=1
 *   device index=0 name="..." compute=9.0 arch=900 integrated=0 total=N pci_id=0000:00:05.0
 * Exit 0 only if the probe succeeds and every device would be kept: pci_id as
 * expected (device i at EXPECTED_PCI_ID's device number + i, where vgpu
 * places a guest's further devices), arch string in both cuda_v12 and
 * cuda_v13 lists, integrated == 0, total > 0, NVIDIA driver major >= 570. */
#include <ctype.h>

#include "vgpu_test.h"

typedef CUresult (*cuInit_fn)(unsigned int);
typedef CUresult (*cuDriverGetVersion_fn)(int *);
typedef CUresult (*cuDeviceGetCount_fn)(int *);
typedef CUresult (*cuDeviceGet_fn)(CUdevice *, int);
typedef CUresult (*cuDeviceGetAttribute_fn)(int *, int, CUdevice);
typedef CUresult (*cuDeviceGetName_fn)(char *, int, CUdevice);
typedef CUresult (*cuDeviceTotalMem_v2_fn)(size_t *, CUdevice);
typedef CUresult (*cuDeviceTotalMem_fn)(unsigned int *, CUdevice);
typedef CUresult (*cuDeviceGetPCIBusId_fn)(char *, int, CUdevice);

typedef nvmlReturn_t (*nvmlInit_v2_fn)(void);
typedef nvmlReturn_t (*nvmlSystemGetDriverVersion_fn)(char *, unsigned int);
typedef nvmlReturn_t (*nvmlShutdown_fn)(void);

/* ggml's ARCHS strings ("%d%d0") of Ollama v0.32.15's variants. */
static const char *const ARCHS_CUDA_V12[] = {"500", "520", "600", "610", "700", "750", "800",
                                             "860", "890", "900", "1000", "1200", NULL};
static const char *const ARCHS_CUDA_V13[] = {"750", "800", "860", "870", "890", "900",
                                             "1000", "1030", "1100", "1200", "1210", NULL};

static int in_list(const char *const *list, const char *s) {
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

/* The NVML step: the text before the first '.' is the driver major; -1 = unknown. */
static int nvidia_driver_major(char *version, size_t len) {
    version[0] = '\0';
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        h = dlopen("libnvidia-ml.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "nvml: dlopen failed: %s\n", dlerror());
        return -1;
    }
    nvmlInit_v2_fn init = (nvmlInit_v2_fn)dlsym(h, "nvmlInit_v2");
    nvmlSystemGetDriverVersion_fn ver =
        (nvmlSystemGetDriverVersion_fn)dlsym(h, "nvmlSystemGetDriverVersion");
    nvmlShutdown_fn shutdown = (nvmlShutdown_fn)dlsym(h, "nvmlShutdown");
    if (!init || !ver || !shutdown) {
        fprintf(stderr, "nvml: missing symbol\n");
        return -1;
    }
    nvmlReturn_t rc = init();
    if (rc != NVML_SUCCESS) {
        fprintf(stderr, "nvml: nvmlInit_v2=%d\n", rc);
        return -1;
    }
    char buf[80];
    memset(buf, 0, sizeof buf);
    rc = ver(buf, sizeof buf);
    shutdown();
    if (rc != NVML_SUCCESS) {
        fprintf(stderr, "nvml: nvmlSystemGetDriverVersion=%d\n", rc);
        return -1;
    }
    snprintf(version, len, "%s", buf);
    char *end = NULL;
    long major = strtol(buf, &end, 10);
    if (end == buf || (*end != '.' && *end != '\0'))
        return -1;
    return (int)major;
}

/* Device i's expected address: `base` with its device number advanced by i. */
static void nth_pci(const char *base, int i, char *out, size_t len) {
    unsigned dom = 0, bus = 0, dev = 0, fn = 0;
    if (sscanf(base, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4) {
        snprintf(out, len, "%s", base);
        return;
    }
    snprintf(out, len, "%04x:%02x:%02x.%x", dom, bus, (dev + (unsigned)i) & 0x1f, fn);
}

int main(int argc, char **argv) {
    const char *want_pci = expected_pci(argc > 1 ? argv[1] : NULL);

    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        h = dlopen("libcuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        fail("dlopen(libcuda.so.1 / libcuda.so, RTLD_NOW|RTLD_LOCAL): %s", dlerror());

    REQUIRE_SYM(h, cuInit);
    REQUIRE_SYM(h, cuDriverGetVersion);
    REQUIRE_SYM(h, cuDeviceGetCount);
    REQUIRE_SYM(h, cuDeviceGet);
    REQUIRE_SYM(h, cuDeviceGetAttribute);
    REQUIRE_SYM(h, cuDeviceGetName);
    OPTIONAL_SYM(h, cuDeviceTotalMem_v2);
    OPTIONAL_SYM(h, cuDeviceTotalMem);
    OPTIONAL_SYM(h, cuDeviceGetPCIBusId);
    if (!cuDeviceTotalMem_v2 && !cuDeviceTotalMem)
        fail("neither cuDeviceTotalMem_v2 nor cuDeviceTotalMem exported");
    if (!cuDeviceTotalMem_v2)
        fail("cuDeviceTotalMem_v2 missing (Ollama would fall back; the shim must export it)");
    if (!cuDeviceGetPCIBusId)
        fail("cuDeviceGetPCIBusId missing (optional for Ollama, pci_id would be empty)");

    CHECK(cuInit(0));
    int v = 0;
    CHECK(cuDriverGetVersion(&v));
    int cuda_major = v / 1000, cuda_minor = (v - 1000 * cuda_major) / 10;

    char nv_version[80];
    int nv_major = nvidia_driver_major(nv_version, sizeof nv_version);

    int count = 0;
    CHECK(cuDeviceGetCount(&count));
    printf("driver cuda=%d.%d nvidia=\"%s\" nvidia_major=%d count=%d\n", cuda_major, cuda_minor,
           nv_version, nv_major, count);
    if (nv_major < 0)
        fail("could not verify NVIDIA driver compatibility for CUDA (NVML failed)");
    if (nv_major < 570)
        fail("NVIDIA driver major %d < 570", nv_major);
    if (count < 1)
        fail("cuDeviceGetCount=%d", count);

    for (int i = 0; i < count; i++) {
        CUdevice dev;
        CHECK(cuDeviceGet(&dev, i));
        int major = -1, minor = -1, integrated = -1;
        CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
        CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
        CHECK(cuDeviceGetAttribute(&integrated, CU_DEVICE_ATTRIBUTE_INTEGRATED, dev));
        char name[128];
        memset(name, 0, sizeof name);
        CHECK(cuDeviceGetName(name, sizeof name, dev));
        size_t total = 0;
        CHECK(cuDeviceTotalMem_v2(&total, dev));
        char pci[32];
        memset(pci, 0, sizeof pci);
        CHECK(cuDeviceGetPCIBusId(pci, sizeof pci, dev));
        for (char *p = pci; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        char arch[16];
        snprintf(arch, sizeof arch, "%d%d0", major, minor);

        printf("device index=%d name=\"%s\" compute=%d.%d arch=%s integrated=%d total=%zu "
               "pci_id=%s\n",
               i, name, major, minor, arch, integrated, total, pci);

        if (name[0] == '\0')
            fail("device %d: empty name", i);
        if (total == 0)
            fail("device %d: skipping pseudo-device with zero memory", i);
        if (!in_list(ARCHS_CUDA_V12, arch) || !in_list(ARCHS_CUDA_V13, arch))
            fail("device %d: compute capability %s not in compiled architectures", i, arch);
        if (integrated != 0)
            fail("device %d: integrated=%d", i, integrated);
        char want[32];
        nth_pci(want_pci, i, want, sizeof want);
        if (strcmp(pci, want) != 0)
            fail("device %d: pci_id %s, expected %s", i, pci, want);
    }
    fflush(stdout);
    return 0;
}
