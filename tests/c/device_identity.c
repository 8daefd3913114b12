/* The device's identity must be the same through every door (docs/architecture.md "The
 * device as the guest sees it"): CUDA UUID bytes vs NVML UUID text, CUDA PCI
 * bus id vs attributes 50/33/34 vs NVML pci info, device count and name in
 * both APIs, and the two driver versions.
 *
 * usage: device_identity [EXPECTED_PCI_ID]  (default $VGPU_PCI_BUS_ID, else 0000:00:05.0)
 * stdout: identity uuid=... nvml_uuid=... pci=... attr_pci=... nvml_bus_id=...
 *         nvml_bus_id_legacy=... cuda_driver=N nvidia_driver="..." name="..."
 *         nvml_name="..." total=N nvml_total=N count=N nvml_count=N
 * Exit 0 only if the two APIs agree and the PCI id is the expected one; the
 * Rust test asserts the exact values. */
#include <strings.h>

#include "vgpu_test.h"

typedef CUresult (*cuInit_fn)(unsigned int);
typedef CUresult (*cuDriverGetVersion_fn)(int *);
typedef CUresult (*cuDeviceGetCount_fn)(int *);
typedef CUresult (*cuDeviceGet_fn)(CUdevice *, int);
typedef CUresult (*cuDeviceGetAttribute_fn)(int *, int, CUdevice);
typedef CUresult (*cuDeviceGetUuid_fn)(CUuuid *, CUdevice);
typedef CUresult (*cuDeviceGetUuid_v2_fn)(CUuuid *, CUdevice);
typedef CUresult (*cuDeviceGetName_fn)(char *, int, CUdevice);
typedef CUresult (*cuDeviceTotalMem_v2_fn)(size_t *, CUdevice);
typedef CUresult (*cuDeviceGetPCIBusId_fn)(char *, int, CUdevice);

typedef nvmlReturn_t (*nvmlInit_v2_fn)(void);
typedef nvmlReturn_t (*nvmlShutdown_fn)(void);
typedef nvmlReturn_t (*nvmlSystemGetDriverVersion_fn)(char *, unsigned int);
typedef nvmlReturn_t (*nvmlDeviceGetCount_v2_fn)(unsigned int *);
typedef nvmlReturn_t (*nvmlDeviceGetHandleByIndex_v2_fn)(unsigned int, nvmlDevice_t *);
typedef nvmlReturn_t (*nvmlDeviceGetUUID_fn)(nvmlDevice_t, char *, unsigned int);
typedef nvmlReturn_t (*nvmlDeviceGetName_fn)(nvmlDevice_t, char *, unsigned int);
typedef nvmlReturn_t (*nvmlDeviceGetMemoryInfo_fn)(nvmlDevice_t, nvmlMemory_t *);
typedef nvmlReturn_t (*nvmlDeviceGetPciInfo_v3_fn)(nvmlDevice_t, nvmlPciInfo_t *);

int main(int argc, char **argv) {
    const char *want_pci = expected_pci(argc > 1 ? argv[1] : NULL);

    void *cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!cu)
        fail("dlopen(libcuda.so.1): %s", dlerror());
    REQUIRE_SYM(cu, cuInit);
    REQUIRE_SYM(cu, cuDriverGetVersion);
    REQUIRE_SYM(cu, cuDeviceGetCount);
    REQUIRE_SYM(cu, cuDeviceGet);
    REQUIRE_SYM(cu, cuDeviceGetAttribute);
    REQUIRE_SYM(cu, cuDeviceGetUuid);
    REQUIRE_SYM(cu, cuDeviceGetUuid_v2);
    REQUIRE_SYM(cu, cuDeviceGetName);
    REQUIRE_SYM(cu, cuDeviceTotalMem_v2);
    REQUIRE_SYM(cu, cuDeviceGetPCIBusId);

    CHECK(cuInit(0));
    int cuda_driver = 0, count = 0;
    CHECK(cuDriverGetVersion(&cuda_driver));
    CHECK(cuDeviceGetCount(&count));
    if (count < 1)
        fail("cuDeviceGetCount=%d", count);
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUuuid u1, u2;
    memset(&u1, 0, sizeof u1);
    memset(&u2, 0, sizeof u2);
    CHECK(cuDeviceGetUuid(&u1, dev));
    CHECK(cuDeviceGetUuid_v2(&u2, dev));
    char uuid[41];
    format_uuid(&u1, uuid);
    char name[256];
    memset(name, 0, sizeof name);
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    size_t total = 0;
    CHECK(cuDeviceTotalMem_v2(&total, dev));
    char pci[32];
    memset(pci, 0, sizeof pci);
    CHECK(cuDeviceGetPCIBusId(pci, sizeof pci, dev));
    int dom = -1, bus = -1, slot = -1;
    CHECK(cuDeviceGetAttribute(&dom, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, dev));
    CHECK(cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, dev));
    CHECK(cuDeviceGetAttribute(&slot, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, dev));
    char attr_pci[32];
    snprintf(attr_pci, sizeof attr_pci, "%04x:%02x:%02x.0", dom, bus, slot);

    void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!nv)
        fail("dlopen(libnvidia-ml.so.1): %s", dlerror());
    REQUIRE_SYM(nv, nvmlInit_v2);
    REQUIRE_SYM(nv, nvmlShutdown);
    REQUIRE_SYM(nv, nvmlSystemGetDriverVersion);
    REQUIRE_SYM(nv, nvmlDeviceGetCount_v2);
    REQUIRE_SYM(nv, nvmlDeviceGetHandleByIndex_v2);
    REQUIRE_SYM(nv, nvmlDeviceGetUUID);
    REQUIRE_SYM(nv, nvmlDeviceGetName);
    REQUIRE_SYM(nv, nvmlDeviceGetMemoryInfo);
    REQUIRE_SYM(nv, nvmlDeviceGetPciInfo_v3);
    CHECK(nvmlInit_v2());
    char drv[80];
    memset(drv, 0, sizeof drv);
    CHECK(nvmlSystemGetDriverVersion(drv, sizeof drv));
    unsigned int nvml_count = 0;
    CHECK(nvmlDeviceGetCount_v2(&nvml_count));
    nvmlDevice_t h = NULL;
    CHECK(nvmlDeviceGetHandleByIndex_v2(0, &h));
    char nvml_uuid[96];
    memset(nvml_uuid, 0, sizeof nvml_uuid);
    CHECK(nvmlDeviceGetUUID(h, nvml_uuid, sizeof nvml_uuid));
    char nvml_name[96];
    memset(nvml_name, 0, sizeof nvml_name);
    CHECK(nvmlDeviceGetName(h, nvml_name, sizeof nvml_name));
    nvmlMemory_t m;
    memset(&m, 0, sizeof m);
    CHECK(nvmlDeviceGetMemoryInfo(h, &m));
    nvmlPciInfo_t pi;
    memset(&pi, 0, sizeof pi);
    CHECK(nvmlDeviceGetPciInfo_v3(h, &pi));
    CHECK(nvmlShutdown());

    printf("identity uuid=%s nvml_uuid=%s pci=%s attr_pci=%s nvml_bus_id=%s "
           "nvml_bus_id_legacy=%s nvml_pci_fields=%x:%x:%x cuda_driver=%d nvidia_driver=\"%s\" "
           "name=\"%s\" nvml_name=\"%s\" total=%zu nvml_total=%llu count=%d nvml_count=%u\n",
           uuid, nvml_uuid, pci, attr_pci, pi.busId, pi.busIdLegacy, pi.domain, pi.bus,
           pi.device, cuda_driver, drv, name, nvml_name, total, m.total, count, nvml_count);

    if (uuid_is_zero(&u1))
        fail("UUID is all zeros");
    if (memcmp(&u1, &u2, sizeof u1) != 0)
        fail("cuDeviceGetUuid and cuDeviceGetUuid_v2 disagree");
    if (strcmp(uuid, nvml_uuid) != 0)
        fail("NVML UUID %s != CUDA UUID %s", nvml_uuid, uuid);
    if (strcasecmp(pci, want_pci) != 0)
        fail("cuDeviceGetPCIBusId %s, expected %s", pci, want_pci);
    if (strcasecmp(attr_pci, want_pci) != 0)
        fail("attributes 50/33/34 give %s, expected %s", attr_pci, want_pci);
    if (strcasecmp(pi.busIdLegacy, want_pci) != 0)
        fail("NVML busIdLegacy %s, expected %s", pi.busIdLegacy, want_pci);
    if (strlen(pi.busId) != strlen(want_pci) + 4 || strncmp(pi.busId, "0000", 4) != 0 ||
        strcasecmp(pi.busId + 4, want_pci) != 0)
        fail("NVML busId %s, expected 0000%s", pi.busId, want_pci);
    if ((int)pi.domain != dom || (int)pi.bus != bus || (int)pi.device != slot)
        fail("NVML pci fields %x:%x:%x != CUDA %x:%x:%x", pi.domain, pi.bus, pi.device, dom,
             bus, slot);
    if (strcmp(name, nvml_name) != 0)
        fail("names differ: CUDA \"%s\", NVML \"%s\"", name, nvml_name);
    /* NVML may count memory CUDA does not (A100 and L4 boards do). */
    if (m.total < (unsigned long long)total)
        fail("NVML total %llu below CUDA's %zu", m.total, total);
    if ((unsigned int)count != nvml_count)
        fail("device counts differ: CUDA %d, NVML %u", count, nvml_count);
    fflush(stdout);
    return 0;
}
