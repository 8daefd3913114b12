/* The memory path of libvgpu_cuda.so, driven the way an application drives
 * it: dlopen by path, symbols by name, our own declarations (no CUDA
 * headers on the build machine).
 *
 *   memory LIB      every check; "ok NAME" or "FAIL NAME: ..." per check,
 *                   exit status 1 if any failed.
 */
#include "vgpu_test.h"
#include <pthread.h>
#include <sys/mman.h>

typedef unsigned long long CUdeviceptr;
typedef struct CUstream_st *CUstream;
typedef struct CUpool_st *CUmemoryPool;
typedef unsigned long long CUmemGenericAllocationHandle;

typedef struct {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} Copy2D;

typedef struct {
    int type;
    int id;
} MemLocation;

typedef struct {
    int type;
    int requestedHandleTypes;
    MemLocation location;
    void *win32HandleMetaData;
    unsigned char compressionType, gpuDirectRDMACapable;
    unsigned short usage;
    unsigned char reserved[4];
} AllocProp;

typedef struct {
    MemLocation location;
    int flags;
} AccessDesc;

enum {
    OK = 0,
    INVALID_VALUE = 1,
    NOT_FOUND = 500,
    INVALID_HANDLE = 400,
    HOST_MEMORY_NOT_REGISTERED = 713,
    NOT_SUPPORTED = 801,
    MEMTYPE_HOST = 1,
    MEMTYPE_DEVICE = 2,
    MEMTYPE_UNIFIED = 4,
};

#define MIB ((size_t)1 << 20)

static void fill(unsigned char *p, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)x;
    }
}

/* Index of the first differing byte, or -1. */
static long long differs(const unsigned char *a, const unsigned char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return (long long)i;
    return -1;
}

/* Device memory is byte-exact after H2D, D2D and D2H of n bytes. */
static void round_trip(size_t n) {
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t));
    FN(CUresult, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t));
    FN(CUresult, cuMemcpyDtoD_v2, (CUdeviceptr, CUdeviceptr, size_t));
    char name[64];
    unsigned char *src = malloc(n), *dst = malloc(n);
    CUdeviceptr a = 0, b = 0;
    fill(src, n, n);
    memset(dst, 0, n);
    snprintf(name, sizeof name, "alloc %zu", n);
    EXPECT_RC(cuMemAlloc_v2(&a, n) | cuMemAlloc_v2(&b, n), OK, name);
    snprintf(name, sizeof name, "htod %zu", n);
    EXPECT_RC(cuMemcpyHtoD_v2(a, src, n), OK, name);
    snprintf(name, sizeof name, "dtod %zu", n);
    EXPECT_RC(cuMemcpyDtoD_v2(b, a, n), OK, name);
    snprintf(name, sizeof name, "dtoh %zu", n);
    EXPECT_RC(cuMemcpyDtoH_v2(dst, b, n), OK, name);
    long long at = differs(src, dst, n);
    snprintf(name, sizeof name, "byte-exact %zu", n);
    expect(at < 0, name, "first difference at %lld of %lld", at, (long long)n);
    snprintf(name, sizeof name, "free %zu", n);
    EXPECT_RC(cuMemFree_v2(a) | cuMemFree_v2(b), OK, name);
    free(src);
    free(dst);
}

static void memsets(void) {
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t));
    FN(CUresult, cuMemsetD8_v2, (CUdeviceptr, unsigned char, size_t));
    FN(CUresult, cuMemsetD16_v2, (CUdeviceptr, unsigned short, size_t));
    FN(CUresult, cuMemsetD32_v2, (CUdeviceptr, unsigned int, size_t));
    FN(CUresult, cuMemsetD2D8_v2, (CUdeviceptr, size_t, unsigned char, size_t, size_t));
    FN(CUresult, cuMemsetD2D32_v2, (CUdeviceptr, size_t, unsigned int, size_t, size_t));
    CUdeviceptr d;
    unsigned char h[4096];
    EXPECT_RC(cuMemAlloc_v2(&d, sizeof h), OK, "memset alloc");
    EXPECT_RC(cuMemsetD8_v2(d, 0xA5, sizeof h), OK, "memsetD8");
    cuMemcpyDtoH_v2(h, d, sizeof h);
    int good = 1;
    for (size_t i = 0; i < sizeof h; i++) good &= h[i] == 0xA5;
    expect(good, "memsetD8 value", "%lld %lld", h[0], h[4095]);

    EXPECT_RC(cuMemsetD16_v2(d + 2, 0xBEEF, 3), OK, "memsetD16");
    cuMemcpyDtoH_v2(h, d, 16);
    unsigned short s16[3];
    memcpy(s16, h + 2, 6);
    expect(s16[0] == 0xBEEF && s16[2] == 0xBEEF && h[1] == 0xA5 && h[8] == 0xA5, "memsetD16 value",
          "%llx %llx", s16[0], h[8]);
    EXPECT_RC(cuMemsetD16_v2(d + 1, 1, 1), INVALID_VALUE, "memsetD16 misaligned");

    EXPECT_RC(cuMemsetD32_v2(d + 16, 0x01020304, 4), OK, "memsetD32");
    unsigned int u32[5];
    cuMemcpyDtoH_v2(u32, d + 16, sizeof u32);
    expect(u32[0] == 0x01020304 && u32[3] == 0x01020304 && u32[4] == 0xA5A5A5A5u, "memsetD32 value",
          "%llx %llx", u32[0], u32[4]);
    EXPECT_RC(cuMemsetD32_v2(d + 2, 1, 1), INVALID_VALUE, "memsetD32 misaligned");
    EXPECT_RC(cuMemsetD8_v2(d, 0, 0), OK, "memset of 0 elements");
    EXPECT_RC(cuMemsetD8_v2(d + 4000, 0, 200), INVALID_VALUE, "memset past the allocation");

    /* 2D: 4 rows of 10 bytes, pitch 64. */
    cuMemsetD8_v2(d, 0, sizeof h);
    EXPECT_RC(cuMemsetD2D8_v2(d, 64, 0x7E, 10, 4), OK, "memsetD2D8");
    cuMemcpyDtoH_v2(h, d, 256);
    expect(h[0] == 0x7E && h[9] == 0x7E && h[10] == 0 && h[64 * 3 + 9] == 0x7E && h[64 * 3 + 10] == 0 &&
              h[63] == 0,
          "memsetD2D8 rows", "%lld %lld", h[10], h[64 * 3 + 9]);
    EXPECT_RC(cuMemsetD2D32_v2(d, 128, 0xCAFEF00D, 2, 3), OK, "memsetD2D32");
    cuMemcpyDtoH_v2(h, d, 512);
    memcpy(u32, h + 256, 8);
    expect(u32[0] == 0xCAFEF00D && u32[1] == 0xCAFEF00D && h[264] == 0, "memsetD2D32 rows", "%llx %lld",
          u32[0], h[264]);
    EXPECT_RC(cuMemsetD2D8_v2(d, 4, 1, 10, 2), INVALID_VALUE, "memset2D pitch below width");
    cuMemFree_v2(d);
}

static void unified(void) {
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuMemcpy, (CUdeviceptr, CUdeviceptr, size_t));
    CUdeviceptr a, b;
    unsigned char src[5000], mid[5000], dst[5000];
    fill(src, sizeof src, 7);
    cuMemAlloc_v2(&a, sizeof src);
    cuMemAlloc_v2(&b, sizeof src);
    EXPECT_RC(cuMemcpy(a, (CUdeviceptr)(uintptr_t)src, sizeof src), OK, "cuMemcpy host->device");
    EXPECT_RC(cuMemcpy(b + 100, a + 100, 4000), OK, "cuMemcpy device->device (interior)");
    EXPECT_RC(cuMemcpy(b, a, 100), OK, "cuMemcpy device->device (head)");
    memset(dst, 0, sizeof dst);
    EXPECT_RC(cuMemcpy((CUdeviceptr)(uintptr_t)dst, b, 4100), OK, "cuMemcpy device->host");
    expect(differs(src, dst, 4100) < 0, "cuMemcpy unified bytes", "%lld %lld", differs(src, dst, 4100), 0);
    EXPECT_RC(cuMemcpy((CUdeviceptr)(uintptr_t)mid, (CUdeviceptr)(uintptr_t)src, sizeof src), OK,
       "cuMemcpy host->host");
    expect(differs(src, mid, sizeof src) < 0, "cuMemcpy host->host bytes", "%lld %lld", 0, 0);
    EXPECT_RC(cuMemcpy(a, b, 0), OK, "cuMemcpy of 0 bytes");
    EXPECT_RC(cuMemcpy(a + 4000, b, 1001), INVALID_VALUE, "cuMemcpy past the allocation");
    cuMemFree_v2(a);
    cuMemFree_v2(b);
}

static void copies_2d(void) {
    FN(CUresult, cuMemAllocPitch_v2, (CUdeviceptr *, size_t *, size_t, size_t, unsigned));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuMemcpy2D_v2, (const Copy2D *));
    FN(CUresult, cuMemcpy2DUnaligned_v2, (const Copy2D *));
    FN(CUresult, cuMemGetAddressRange_v2, (CUdeviceptr *, size_t *, CUdeviceptr));
    enum { W = 300, H = 37, HP = 320 };
    CUdeviceptr d;
    size_t pitch = 0;
    EXPECT_RC(cuMemAllocPitch_v2(&d, &pitch, W, H, 4), OK, "cuMemAllocPitch");
    expect(pitch >= W, "pitch >= width", "pitch %lld width %lld", (long long)pitch, W);
    CUdeviceptr base = 0;
    size_t size = 0;
    EXPECT_RC(cuMemGetAddressRange_v2(&base, &size, d + 5), OK, "cuMemGetAddressRange");
    expect(base == d && size >= pitch * H, "address range", "base off %lld size %lld",
          (long long)(base - d), (long long)size);
    EXPECT_RC(cuMemGetAddressRange_v2(&base, &size, 0x10), NOT_FOUND, "cuMemGetAddressRange unknown");

    static unsigned char src[HP * H], back[HP * H];
    fill(src, sizeof src, 3);
    memset(back, 0, sizeof back);
    Copy2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = MEMTYPE_HOST;
    c.srcHost = src;
    c.srcPitch = HP;
    c.dstMemoryType = MEMTYPE_DEVICE;
    c.dstDevice = d;
    c.dstPitch = pitch;
    c.WidthInBytes = W;
    c.Height = H;
    EXPECT_RC(cuMemcpy2D_v2(&c), OK, "cuMemcpy2D host->device");
    memset(&c, 0, sizeof c);
    c.srcMemoryType = MEMTYPE_UNIFIED;
    c.srcDevice = d;
    c.srcPitch = pitch;
    c.dstMemoryType = MEMTYPE_HOST;
    c.dstHost = back;
    c.dstPitch = HP;
    c.WidthInBytes = W;
    c.Height = H;
    EXPECT_RC(cuMemcpy2DUnaligned_v2(&c), OK, "cuMemcpy2D device(unified)->host");
    int good = 1;
    for (int r = 0; r < H; r++) {
        good &= differs(src + r * HP, back + r * HP, W) < 0;
        good &= back[r * HP + W] == 0;
    }
    expect(good, "2D rows byte-exact, gaps untouched", "%lld %lld", 0, 0);
    /* Offsets: copy a 10x5 window starting at (x=7, y=3) of the device
     * image into the top-left of a fresh host buffer. */
    memset(back, 0, sizeof back);
    c.srcXInBytes = 7;
    c.srcY = 3;
    c.WidthInBytes = 10;
    c.Height = 5;
    c.dstPitch = 10;
    EXPECT_RC(cuMemcpy2D_v2(&c), OK, "cuMemcpy2D with x/y offsets");
    good = 1;
    for (int r = 0; r < 5; r++) good &= differs(src + (r + 3) * HP + 7, back + r * 10, 10) < 0;
    expect(good, "2D window bytes", "%lld %lld", 0, 0);
    c.srcArray = (void *)0x1;
    c.srcMemoryType = 3;
    EXPECT_RC(cuMemcpy2D_v2(&c), NOT_SUPPORTED, "cuMemcpy2D from an array");
    c.srcMemoryType = MEMTYPE_DEVICE;
    c.srcPitch = 4;
    EXPECT_RC(cuMemcpy2D_v2(&c), INVALID_VALUE, "cuMemcpy2D pitch below width");
    cuMemFree_v2(d);
}

static void host_memory(void) {
    FN(CUresult, cuMemAllocHost_v2, (void **, size_t));
    FN(CUresult, cuMemHostAlloc, (void **, size_t, unsigned));
    FN(CUresult, cuMemFreeHost, (void *));
    FN(CUresult, cuMemHostRegister_v2, (void *, size_t, unsigned));
    FN(CUresult, cuMemHostUnregister, (void *));
    FN(CUresult, cuMemHostGetFlags, (unsigned *, void *));
    FN(CUresult, cuMemHostGetDevicePointer_v2, (CUdeviceptr *, void *, unsigned));
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t));
    FN(CUresult, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t));
    FN(CUresult, cuMemcpy, (CUdeviceptr, CUdeviceptr, size_t));
    FN(CUresult, cuPointerGetAttribute, (void *, int, CUdeviceptr));
    const size_t n = 3 * MIB + 5;
    unsigned char *p = NULL, *q = NULL;
    EXPECT_RC(cuMemAllocHost_v2((void **)&p, n), OK, "cuMemAllocHost");
    EXPECT_RC(cuMemHostAlloc((void **)&q, n, 0x2 | 0x1), OK, "cuMemHostAlloc DEVICEMAP|PORTABLE");
    EXPECT_RC(cuMemHostAlloc((void **)&q, n, 0x40), INVALID_VALUE, "cuMemHostAlloc bad flags");
    unsigned flags = 99;
    EXPECT_RC(cuMemHostGetFlags(&flags, q), OK, "cuMemHostGetFlags");
    expect(flags == 3, "host flags", "flags %lld", flags, 0);
    CUdeviceptr dp = 0;
    EXPECT_RC(cuMemHostGetDevicePointer_v2(&dp, q, 0), NOT_SUPPORTED, "cuMemHostGetDevicePointer (guest RAM)");
    fill(p, n, 11);
    CUdeviceptr d;
    cuMemAlloc_v2(&d, n);
    EXPECT_RC(cuMemcpyHtoD_v2(d, p, n), OK, "htod from page-locked");
    EXPECT_RC(cuMemcpy((CUdeviceptr)(uintptr_t)q, d, n), OK, "cuMemcpy to page-locked (host side)");
    expect(differs(p, q, n) < 0, "page-locked round trip", "%lld %lld", differs(p, q, n), 0);
    unsigned mt = 0;
    EXPECT_RC(cuPointerGetAttribute(&mt, 2, (CUdeviceptr)(uintptr_t)(p + 100)), OK, "pointer attr of host alloc");
    expect(mt == MEMTYPE_HOST, "host alloc is HOST memory", "%lld %lld", mt, 0);
    EXPECT_RC(cuMemFreeHost(p), OK, "cuMemFreeHost");
    EXPECT_RC(cuMemFreeHost(p), INVALID_VALUE, "cuMemFreeHost twice");
    EXPECT_RC(cuMemFreeHost(q), OK, "cuMemFreeHost (2)");

    unsigned char *mine = malloc(n), *back = malloc(n);
    fill(mine, n, 12);
    EXPECT_RC(cuMemHostRegister_v2(mine, n, 0), OK, "cuMemHostRegister");
    EXPECT_RC(cuMemHostRegister_v2(mine + 10, 10, 0), 712, "cuMemHostRegister overlap");
    EXPECT_RC(cuMemHostRegister_v2(mine, n, 0x4), NOT_SUPPORTED, "cuMemHostRegister IOMEMORY");
    EXPECT_RC(cuMemcpyHtoD_v2(d, mine, n), OK, "htod from registered");
    EXPECT_RC(cuMemcpyDtoH_v2(back, d, n), OK, "dtoh to malloc'd");
    expect(differs(mine, back, n) < 0, "registered round trip", "%lld %lld", differs(mine, back, n), 0);
    mt = 0;
    EXPECT_RC(cuPointerGetAttribute(&mt, 2, (CUdeviceptr)(uintptr_t)(mine + n - 1)), OK,
       "pointer attr of registered");
    expect(mt == MEMTYPE_HOST, "registered is HOST memory", "%lld %lld", mt, 0);
    EXPECT_RC(cuMemHostUnregister(mine), OK, "cuMemHostUnregister");
    EXPECT_RC(cuMemHostUnregister(mine), HOST_MEMORY_NOT_REGISTERED, "cuMemHostUnregister twice");
    EXPECT_RC(cuPointerGetAttribute(&mt, 2, (CUdeviceptr)(uintptr_t)mine), INVALID_VALUE,
       "pointer attr after unregister");
    cuMemFree_v2(d);
    free(mine);
    free(back);
}

static void pointer_attributes(CUcontext ctx) {
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuPointerGetAttribute, (void *, int, CUdeviceptr));
    FN(CUresult, cuPointerGetAttributes, (unsigned, int *, void **, CUdeviceptr));
    CUdeviceptr d;
    cuMemAlloc_v2(&d, 1000);
    CUcontext c = NULL;
    unsigned mt = 0;
    int ord = -1;
    CUdeviceptr start = 0;
    size_t size = 0;
    EXPECT_RC(cuPointerGetAttribute(&c, 1, d + 10), OK, "attr CONTEXT");
    expect(c == ctx, "attr CONTEXT value", "%llx %llx", (long long)(uintptr_t)c, (long long)(uintptr_t)ctx);
    EXPECT_RC(cuPointerGetAttribute(&mt, 2, d + 10), OK, "attr MEMORY_TYPE");
    expect(mt == MEMTYPE_DEVICE, "attr MEMORY_TYPE value", "%lld %lld", mt, 0);
    EXPECT_RC(cuPointerGetAttribute(&ord, 9, d + 999), OK, "attr DEVICE_ORDINAL");
    expect(ord == 0, "attr DEVICE_ORDINAL value", "%lld %lld", ord, 0);
    EXPECT_RC(cuPointerGetAttribute(&start, 11, d + 999), OK, "attr RANGE_START_ADDR");
    EXPECT_RC(cuPointerGetAttribute(&size, 12, d + 999), OK, "attr RANGE_SIZE");
    expect(start == d && size == 1000, "range attrs", "start off %lld size %lld", (long long)(start - d),
          (long long)size);
    void *hp = NULL;
    EXPECT_RC(cuPointerGetAttribute(&hp, 4, d), INVALID_VALUE, "attr HOST_POINTER of device memory");
    EXPECT_RC(cuPointerGetAttribute(&mt, 2, d + 1000), INVALID_VALUE, "attr past the end (unknown)");
    int stack_var;
    EXPECT_RC(cuPointerGetAttribute(&mt, 2, (CUdeviceptr)(uintptr_t)&stack_var), INVALID_VALUE,
       "attr of unregistered host memory");
    /* The plural call reports unknown memory as type 0 and succeeds. */
    int attrs[3] = {2, 1, 9};
    unsigned t = 77;
    CUcontext c2 = (CUcontext)1;
    int o2 = 5;
    void *data[3] = {&t, &c2, &o2};
    EXPECT_RC(cuPointerGetAttributes(3, attrs, data, (CUdeviceptr)(uintptr_t)&stack_var), OK,
       "cuPointerGetAttributes unknown");
    expect(t == 0 && c2 == NULL, "plural defaults", "type %lld ctx %lld", t, (long long)(uintptr_t)c2);
    EXPECT_RC(cuPointerGetAttributes(3, attrs, data, d), OK, "cuPointerGetAttributes device");
    expect(t == MEMTYPE_DEVICE && c2 == ctx && o2 == 0, "plural device values", "type %lld ord %lld", t, o2);
    cuMemFree_v2(d);
    EXPECT_RC(cuPointerGetAttribute(&mt, 2, d), INVALID_VALUE, "attr after free");
}

static void info_and_errors(void) {
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuMemGetInfo_v2, (size_t *, size_t *));
    FN(CUresult, cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t));
    FN(CUresult, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t));
    FN(CUresult, cuMemcpyDtoD_v2, (CUdeviceptr, CUdeviceptr, size_t));
    size_t free0 = 0, total = 0, free1 = 0, free2 = 0;
    EXPECT_RC(cuMemGetInfo_v2(&free0, &total), OK, "cuMemGetInfo");
    CUdeviceptr big;
    EXPECT_RC(cuMemAlloc_v2(&big, (size_t)1 << 30), OK, "alloc 1 GiB");
    cuMemGetInfo_v2(&free1, &total);
    expect(free0 - free1 >= ((size_t)1 << 30), "free drops by >= 1 GiB", "before %lld after %lld",
          (long long)free0, (long long)free1);
    /* Unified addressing: the device range is reserved in this process, so
     * no guest buffer can ever share its addresses. */
    void *m = mmap((void *)(uintptr_t)(big + ((size_t)1 << 29)), 4096, PROT_READ,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    expect(m == MAP_FAILED, "device range is reserved in the guest", "mapped at %llx%lld",
          (long long)(uintptr_t)m, 0);
    EXPECT_RC(cuMemFree_v2(big), OK, "free 1 GiB");
    m = mmap((void *)(uintptr_t)(big + ((size_t)1 << 29)), 4096, PROT_READ,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    expect(m != MAP_FAILED, "freed range is released in the guest", "%lld %lld", 0, 0);
    if (m != MAP_FAILED) munmap(m, 4096);
    cuMemGetInfo_v2(&free2, &total);
    expect(free2 >= free1 + ((size_t)1 << 30), "free comes back", "during %lld after %lld", (long long)free1,
          (long long)free2);
    EXPECT_RC(cuMemFree_v2(big), INVALID_VALUE, "double free");
    EXPECT_RC(cuMemAlloc_v2(&big, 0), INVALID_VALUE, "alloc 0 bytes");
    EXPECT_RC(cuMemAlloc_v2(NULL, 16), INVALID_VALUE, "alloc NULL out-pointer");

    CUdeviceptr d;
    unsigned char buf[256];
    cuMemAlloc_v2(&d, 128);
    EXPECT_RC(cuMemFree_v2(d + 1), INVALID_VALUE, "free of an interior pointer");
    EXPECT_RC(cuMemcpyHtoD_v2(d + 64, buf, 65), INVALID_VALUE, "htod past the allocation");
    EXPECT_RC(cuMemcpyDtoH_v2(buf, d, 129), INVALID_VALUE, "dtoh past the allocation");
    EXPECT_RC(cuMemcpyDtoD_v2(d, d + 100, 64), INVALID_VALUE, "dtod past the allocation");
    /* Not in the guest's table: the host has the final word. */
    long long r = cuMemcpyHtoD_v2(0x7f0000001000ull, buf, 16);
    expect(r != OK, "htod to an address outside every allocation", "returned %lld %lld", r, 0);
    r = cuMemcpyDtoH_v2(buf, 0x7f0000001000ull, 16);
    expect(r != OK, "dtoh from an address outside every allocation", "returned %lld %lld", r, 0);
    EXPECT_RC(cuMemcpyHtoD_v2(d, NULL, 0), OK, "0-byte htod");
    EXPECT_RC(cuMemcpyHtoD_v2(d, NULL, 4), INVALID_VALUE, "htod from NULL");
    cuMemFree_v2(d);
}

static void streams(CUcontext ctx) {
    FN(CUresult, cuStreamCreate, (CUstream *, unsigned));
    FN(CUresult, cuStreamCreateWithPriority, (CUstream *, unsigned, int));
    FN(CUresult, cuStreamDestroy_v2, (CUstream));
    FN(CUresult, cuStreamSynchronize, (CUstream));
    FN(CUresult, cuStreamQuery, (CUstream));
    FN(CUresult, cuStreamGetPriority, (CUstream, int *));
    FN(CUresult, cuStreamGetFlags, (CUstream, unsigned *));
    FN(CUresult, cuStreamGetCtx, (CUstream, CUcontext *));
    FN(CUresult, cuStreamSynchronize_ptsz, (CUstream));
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuMemcpyHtoDAsync_v2, (CUdeviceptr, const void *, size_t, CUstream));
    FN(CUresult, cuMemcpyDtoHAsync_v2, (void *, CUdeviceptr, size_t, CUstream));
    FN(CUresult, cuMemcpyDtoDAsync_v2, (CUdeviceptr, CUdeviceptr, size_t, CUstream));
    FN(CUresult, cuMemcpyAsync, (CUdeviceptr, CUdeviceptr, size_t, CUstream));
    FN(CUresult, cuMemsetD32Async, (CUdeviceptr, unsigned, size_t, CUstream));
    FN(CUresult, cuMemcpyHtoDAsync_v2_ptsz, (CUdeviceptr, const void *, size_t, CUstream));
    FN(CUresult, cuMemAllocAsync, (CUdeviceptr *, size_t, CUstream));
    FN(CUresult, cuMemFreeAsync, (CUdeviceptr, CUstream));
    FN(CUresult, cuMemAllocFromPoolAsync, (CUdeviceptr *, size_t, CUmemoryPool, CUstream));
    FN(CUresult, cuMemAllocFromPoolAsync_ptsz, (CUdeviceptr *, size_t, CUmemoryPool, CUstream));
    FN(CUresult, cuDeviceGetDefaultMemPool, (CUmemoryPool *, CUdevice));
    FN(CUresult, cuDeviceGetMemPool, (CUmemoryPool *, CUdevice));
    FN(CUresult, cuMemPoolGetAttribute, (CUmemoryPool, int, void *));
    FN(CUresult, cuMemPoolSetAttribute, (CUmemoryPool, int, void *));
    FN(CUresult, cuMemPoolTrimTo, (CUmemoryPool, size_t));
    FN(CUresult, cuPointerGetAttribute, (void *, int, CUdeviceptr));

    CUstream s = NULL, hi = NULL;
    EXPECT_RC(cuStreamCreate(&s, 0), OK, "cuStreamCreate");
    EXPECT_RC(cuStreamCreateWithPriority(&hi, 1, -100), OK, "cuStreamCreateWithPriority");
    EXPECT_RC(cuStreamCreate(&s, 0x10), INVALID_VALUE, "cuStreamCreate bad flags");
    int prio = 1;
    unsigned fl = 9;
    CUcontext c = NULL;
    EXPECT_RC(cuStreamGetPriority(hi, &prio), OK, "cuStreamGetPriority");
    EXPECT_RC(cuStreamGetFlags(hi, &fl), OK, "cuStreamGetFlags");
    EXPECT_RC(cuStreamGetCtx(hi, &c), OK, "cuStreamGetCtx");
    expect(prio == -5 && fl == 1 && c == ctx, "stream facts", "prio %lld flags %lld", prio, fl);
    EXPECT_RC(cuStreamGetPriority(NULL, &prio), OK, "priority of the NULL stream");
    expect(prio == 0, "NULL stream priority", "%lld %lld", prio, 0);
    EXPECT_RC(cuStreamQuery((CUstream)0xdeadbeef), INVALID_HANDLE, "cuStreamQuery bad handle");
    EXPECT_RC(cuStreamSynchronize((CUstream)0xdeadbeef), INVALID_HANDLE, "cuStreamSynchronize bad handle");

    enum { N = 3 * 1024 * 1024 + 3 };
    unsigned char *src = malloc(N), *dst = malloc(N);
    fill(src, N, 21);
    memset(dst, 0, N);
    CUdeviceptr a, b;
    cuMemAlloc_v2(&a, N);
    cuMemAlloc_v2(&b, N);
    EXPECT_RC(cuMemcpyHtoDAsync_v2(a, src, N, s), OK, "htod async");
    EXPECT_RC(cuMemcpyDtoDAsync_v2(b, a, N, s), OK, "dtod async");
    EXPECT_RC(cuMemcpyDtoHAsync_v2(dst, b, N, s), OK, "dtoh async");
    EXPECT_RC(cuStreamSynchronize(s), OK, "cuStreamSynchronize");
    EXPECT_RC(cuStreamQuery(s), OK, "cuStreamQuery idle");
    expect(differs(src, dst, N) < 0, "async round trip", "%lld %lld", differs(src, dst, N), 0);
    EXPECT_RC(cuMemsetD32Async(a, 0x11223344, 4, (CUstream)0x1), OK, "memset async on CU_STREAM_LEGACY");
    EXPECT_RC(cuMemcpyAsync((CUdeviceptr)(uintptr_t)dst, a, 16, (CUstream)0x2), OK,
       "cuMemcpyAsync on CU_STREAM_PER_THREAD");
    unsigned w[4];
    memcpy(w, dst, 16);
    expect(w[0] == 0x11223344 && w[3] == 0x11223344, "legacy memset then per-thread copy", "%llx %llx", w[0],
          w[3]);
    EXPECT_RC(cuMemcpyHtoDAsync_v2_ptsz(a, src, 64, NULL), OK, "htod async _ptsz on NULL");
    EXPECT_RC(cuStreamSynchronize_ptsz(NULL), OK, "cuStreamSynchronize_ptsz(NULL)");
    EXPECT_RC(cuStreamSynchronize(NULL), OK, "cuStreamSynchronize(NULL)");
    EXPECT_RC(cuStreamSynchronize((CUstream)0x1), OK, "cuStreamSynchronize(LEGACY)");
    EXPECT_RC(cuStreamQuery(NULL), OK, "cuStreamQuery(NULL)");
    EXPECT_RC(cuMemcpyHtoDAsync_v2(a, src, 16, (CUstream)0x12345678), INVALID_HANDLE, "async copy on a bad stream");

    /* Stream-ordered allocation. */
    CUmemoryPool pool = NULL, cur = NULL;
    EXPECT_RC(cuDeviceGetDefaultMemPool(&pool, 0), OK, "cuDeviceGetDefaultMemPool");
    EXPECT_RC(cuDeviceGetMemPool(&cur, 0), OK, "cuDeviceGetMemPool");
    expect(pool != NULL && pool == cur, "current pool is the default", "%llx %llx", (long long)(uintptr_t)pool,
          (long long)(uintptr_t)cur);
    unsigned long long thr = 1 << 20, got = 0;
    EXPECT_RC(cuMemPoolSetAttribute(pool, 4, &thr), OK, "pool set RELEASE_THRESHOLD");
    EXPECT_RC(cuMemPoolGetAttribute(pool, 4, &got), OK, "pool get RELEASE_THRESHOLD");
    expect(got == thr, "release threshold", "%lld %lld", (long long)got, (long long)thr);
    EXPECT_RC(cuMemPoolGetAttribute((CUmemoryPool)0x777, 4, &got), INVALID_VALUE, "unknown pool");
    CUdeviceptr ap = 0;
    EXPECT_RC(cuMemAllocAsync(&ap, 4096, s), OK, "cuMemAllocAsync");
    EXPECT_RC(cuMemcpyHtoDAsync_v2(ap, src, 4096, s), OK, "htod into async allocation");
    memset(dst, 0, 4096);
    EXPECT_RC(cuMemcpyDtoHAsync_v2(dst, ap, 4096, s), OK, "dtoh from async allocation");
    CUmemoryPool owner = NULL;
    EXPECT_RC(cuPointerGetAttribute(&owner, 17, ap), OK, "attr MEMPOOL_HANDLE");
    expect(owner == pool, "async allocation's pool", "%llx %llx", (long long)(uintptr_t)owner,
          (long long)(uintptr_t)pool);
    EXPECT_RC(cuMemFreeAsync(ap, s), OK, "cuMemFreeAsync");
    EXPECT_RC(cuMemFreeAsync(ap, s), INVALID_VALUE, "cuMemFreeAsync twice");
    EXPECT_RC(cuStreamSynchronize(s), OK, "sync after free");
    expect(differs(src, dst, 4096) < 0, "async allocation round trip", "%lld %lld", 0, 0);
    /* From a named pool, on a created stream and on the per-thread one. */
    CUdeviceptr fp = 0, fq = 0;
    EXPECT_RC(cuMemAllocFromPoolAsync(&fp, 8192, pool, s), OK, "cuMemAllocFromPoolAsync");
    EXPECT_RC(cuMemAllocFromPoolAsync_ptsz(&fq, 256, pool, NULL), OK, "cuMemAllocFromPoolAsync_ptsz");
    expect(fp != 0 && fq != 0 && fp != fq, "pool allocations", "%llx %llx", (long long)fp, (long long)fq);
    EXPECT_RC(cuMemcpyHtoDAsync_v2(fp, src + 5, 8192, s), OK, "htod into a pool allocation");
    memset(dst, 0, 8192);
    EXPECT_RC(cuMemcpyDtoHAsync_v2(dst, fp, 8192, s), OK, "dtoh from a pool allocation");
    EXPECT_RC(cuStreamSynchronize(s), OK, "sync pool allocation");
    expect(differs(src + 5, dst, 8192) < 0, "pool allocation round trip", "%lld %lld", 0, 0);
    owner = NULL;
    EXPECT_RC(cuPointerGetAttribute(&owner, 17, fp), OK, "attr MEMPOOL_HANDLE of a pool allocation");
    expect(owner == pool, "pool allocation's pool", "%llx %llx", (long long)(uintptr_t)owner,
          (long long)(uintptr_t)pool);
    CUdeviceptr bad = 0;
    EXPECT_RC(cuMemAllocFromPoolAsync(&bad, 64, (CUmemoryPool)0x777, s), INVALID_VALUE, "unknown pool");
    EXPECT_RC(cuMemAllocFromPoolAsync(&bad, 0, pool, s), INVALID_VALUE, "0 bytes from a pool");
    EXPECT_RC(cuMemAllocFromPoolAsync(NULL, 64, pool, s), INVALID_VALUE, "NULL out-pointer");
    EXPECT_RC(cuMemFreeAsync(fp, s), OK, "free a pool allocation");
    EXPECT_RC(cuMemFreeAsync(fq, s), OK, "free a pool allocation (2)");
    EXPECT_RC(cuStreamSynchronize(s), OK, "sync after pool frees");
    EXPECT_RC(cuMemPoolTrimTo(pool, 0), OK, "cuMemPoolTrimTo");

    cuMemFree_v2(a);
    cuMemFree_v2(b);
    EXPECT_RC(cuStreamDestroy_v2(s), OK, "cuStreamDestroy");
    EXPECT_RC(cuStreamDestroy_v2(hi), OK, "cuStreamDestroy (2)");
    EXPECT_RC(cuStreamDestroy_v2(s), INVALID_HANDLE, "cuStreamDestroy twice");
    EXPECT_RC(cuStreamQuery(s), INVALID_HANDLE, "query a destroyed stream");
    free(src);
    free(dst);
}

static void vmm(void) {
    FN(CUresult, cuDeviceGetAttribute, (int *, int, CUdevice));
    FN(CUresult, cuMemGetAllocationGranularity, (size_t *, const AllocProp *, int));
    FN(CUresult, cuMemCreate, (CUmemGenericAllocationHandle *, size_t, const AllocProp *, unsigned long long));
    FN(CUresult, cuMemRelease, (CUmemGenericAllocationHandle));
    FN(CUresult, cuMemAddressReserve, (CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long));
    FN(CUresult, cuMemAddressFree, (CUdeviceptr, size_t));
    FN(CUresult, cuMemMap, (CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long));
    FN(CUresult, cuMemUnmap, (CUdeviceptr, size_t));
    FN(CUresult, cuMemSetAccess, (CUdeviceptr, size_t, const AccessDesc *, size_t));
    FN(CUresult, cuMemGetAccess, (unsigned long long *, const MemLocation *, CUdeviceptr));
    FN(CUresult, cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t));
    FN(CUresult, cuMemcpy, (CUdeviceptr, CUdeviceptr, size_t));
    FN(CUresult, cuPointerGetAttribute, (void *, int, CUdeviceptr));

    int vmm_ok = -1;
    EXPECT_RC(cuDeviceGetAttribute(&vmm_ok, 102, 0), OK, "attribute 102");
    printf("vmm-attribute %d\n", vmm_ok);
    if (vmm_ok != 1) {
        expect(0, "VMM supported by the emulated host", "attribute 102 = %lld%lld", vmm_ok, 0);
        return;
    }
    AllocProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = 1;
    prop.location.type = 1;
    prop.location.id = 0;
    size_t gran = 0;
    EXPECT_RC(cuMemGetAllocationGranularity(&gran, &prop, 0), OK, "cuMemGetAllocationGranularity");
    expect(gran > 0 && (gran & (gran - 1)) == 0, "granularity is a power of two", "%lld %lld", (long long)gran, 0);
    const size_t size = 2 * gran;
    CUdeviceptr va = 0;
    EXPECT_RC(cuMemAddressReserve(&va, 2 * size, 0, 0, 0), OK, "cuMemAddressReserve");
    CUmemGenericAllocationHandle h = 0;
    EXPECT_RC(cuMemCreate(&h, size, &prop, 0), OK, "cuMemCreate");
    EXPECT_RC(cuMemMap(va, size, 0, h, 0), OK, "cuMemMap");
    EXPECT_RC(cuMemMap(va + size, size, 0, 0x4242, 0), INVALID_VALUE, "cuMemMap unknown handle");
    AccessDesc acc;
    memset(&acc, 0, sizeof acc);
    acc.location.type = 1;
    acc.location.id = 0;
    acc.flags = 3;
    EXPECT_RC(cuMemSetAccess(va, size, &acc, 1), OK, "cuMemSetAccess");
    unsigned long long got = 0;
    EXPECT_RC(cuMemGetAccess(&got, &acc.location, va), OK, "cuMemGetAccess");
    expect(got == 3, "access is read-write", "%lld %lld", (long long)got, 0);
    unsigned char *src = malloc(size), *dst = malloc(size);
    fill(src, size, 31);
    memset(dst, 0, size);
    EXPECT_RC(cuMemcpyHtoD_v2(va, src, size), OK, "htod into a mapping");
    EXPECT_RC(cuMemcpy((CUdeviceptr)(uintptr_t)dst, va, size), OK, "unified copy from a mapping");
    expect(differs(src, dst, size) < 0, "mapping round trip", "%lld %lld", differs(src, dst, size), 0);
    unsigned mt = 0;
    EXPECT_RC(cuPointerGetAttribute(&mt, 2, va + 7), OK, "attr of a mapping");
    expect(mt == MEMTYPE_DEVICE, "mapping is DEVICE memory", "%lld %lld", mt, 0);
    EXPECT_RC(cuMemUnmap(va, size), OK, "cuMemUnmap");
    EXPECT_RC(cuPointerGetAttribute(&mt, 2, va + 7), INVALID_VALUE, "attr after unmap");
    /* Reserved but unmapped: still device address space, so the copy is
     * refused by the host instead of reading the address as guest memory. */
    long long r = cuMemcpy((CUdeviceptr)(uintptr_t)dst, va + 64, 64);
    expect(r != OK, "unified copy from reserved, unmapped space fails", "returned %lld %lld", r, 0);
    EXPECT_RC(cuMemRelease(h), OK, "cuMemRelease");
    EXPECT_RC(cuMemRelease(h), INVALID_VALUE, "cuMemRelease twice");
    EXPECT_RC(cuMemAddressFree(va, 2 * size), OK, "cuMemAddressFree");
    EXPECT_RC(cuMemAddressFree(va, 2 * size), INVALID_VALUE, "cuMemAddressFree twice");
    free(src);
    free(dst);
}

struct worker {
    CUcontext ctx;
    int id;
    int bad;
};

static void *worker(void *arg) {
    struct worker *w = arg;
    FN(CUresult, cuCtxSetCurrent, (CUcontext));
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemFree_v2, (CUdeviceptr));
    FN(CUresult, cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t));
    FN(CUresult, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t));
    size_t n = 1 * MIB + 17 * (size_t)w->id;
    unsigned char *src = malloc(n), *dst = malloc(n);
    if (cuCtxSetCurrent(w->ctx)) w->bad++;
    for (int round = 0; round < 6; round++) {
        CUdeviceptr d;
        fill(src, n, (uint64_t)w->id * 100 + round);
        if (cuMemAlloc_v2(&d, n)) {
            w->bad++;
            continue;
        }
        if (cuMemcpyHtoD_v2(d, src, n) || cuMemcpyDtoH_v2(dst, d, n) || differs(src, dst, n) >= 0) w->bad++;
        if (cuMemFree_v2(d)) w->bad++;
    }
    free(src);
    free(dst);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: memory LIB\n");
        return 2;
    }
    open_test_lib(argv[1]);
    FN(CUresult, cuInit, (unsigned));
    FN(CUresult, cuDevicePrimaryCtxRetain, (CUcontext *, CUdevice));
    FN(CUresult, cuCtxSetCurrent, (CUcontext));
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuDevicePrimaryCtxRelease_v2, (CUdevice));
    CUdeviceptr d;
    EXPECT_RC(cuInit(0), OK, "cuInit");
    EXPECT_RC(cuMemAlloc_v2(&d, 16), 201, "alloc without a context");
    CUcontext ctx = NULL;
    EXPECT_RC(cuDevicePrimaryCtxRetain(&ctx, 0), OK, "retain primary");
    EXPECT_RC(cuCtxSetCurrent(ctx), OK, "set current");

    round_trip(1);
    round_trip(4097);
    round_trip(64 * MIB);
    round_trip(256 * MIB);
    memsets();
    unified();
    copies_2d();
    host_memory();
    pointer_attributes(ctx);
    info_and_errors();
    streams(ctx);
    vmm();

    enum { T = 8 };
    pthread_t th[T];
    struct worker w[T];
    for (int i = 0; i < T; i++) {
        w[i] = (struct worker){ctx, i, 0};
        pthread_create(&th[i], NULL, worker, &w[i]);
    }
    int bad = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        bad += w[i].bad;
    }
    expect(bad == 0, "8 threads allocating and copying", "%lld failures%lld", bad, 0);

    EXPECT_RC(cuDevicePrimaryCtxRelease_v2(0), OK, "release primary");
    printf("done %d failures\n", test_failures);
    return test_failures ? 1 : 0;
}
