/* Two devices through libvgpu_cuda.so: peer queries, peer access between
 * contexts, copies between them, pointer attributes. Run against the
 * software GPU's 2x-h100 profile (two H100 PCIe with peer access over the
 * switch, no native atomics over PCIe).
 *
 *   peer LIB          both devices, in either CUDA_VISIBLE_DEVICES order
 *   peer LIB single   CUDA_VISIBLE_DEVICES names one device
 *
 * Prints "ok NAME" or "FAIL NAME: ..." per check; exits 1 if any failed. */
#include "vgpu_test.h"

typedef void *CUstream;
typedef unsigned long long CUdeviceptr;

#define INVALID_VALUE 1
#define INVALID_DEVICE 101
#define INVALID_CONTEXT 201
#define PEER_ACCESS_UNSUPPORTED 217
#define PEER_ACCESS_ALREADY_ENABLED 704
#define PEER_ACCESS_NOT_ENABLED 705

enum { P2P_PERFORMANCE_RANK = 1, P2P_ACCESS_SUPPORTED = 2, P2P_NATIVE_ATOMIC_SUPPORTED = 3 };
#define POINTER_ATTRIBUTE_DEVICE_ORDINAL 9

#define N 4096

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int single = argc > 2 && strcmp(argv[2], "single") == 0;
    open_test_lib(argv[1]);
    FN(CUresult, cuInit, (unsigned));
    FN(CUresult, cuDeviceGetCount, (int *));
    FN(CUresult, cuDeviceCanAccessPeer, (int *, CUdevice, CUdevice));
    FN(CUresult, cuDeviceGetP2PAttribute, (int *, int, CUdevice, CUdevice));
    FN(CUresult, cuCtxCreate_v2, (CUcontext *, unsigned, CUdevice));
    FN(CUresult, cuCtxSetCurrent, (CUcontext));
    FN(CUresult, cuCtxGetCurrent, (CUcontext *));
    FN(CUresult, cuCtxPopCurrent_v2, (CUcontext *));
    FN(CUresult, cuCtxDestroy_v2, (CUcontext));
    FN(CUresult, cuCtxEnablePeerAccess, (CUcontext, unsigned));
    FN(CUresult, cuCtxDisablePeerAccess, (CUcontext));
    FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    FN(CUresult, cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t));
    FN(CUresult, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t));
    FN(CUresult, cuMemcpyPeer, (CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t));
    FN(CUresult, cuMemcpyPeerAsync,
       (CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t, CUstream));
    FN(CUresult, cuStreamCreate, (CUstream *, unsigned));
    FN(CUresult, cuStreamSynchronize, (CUstream));
    FN(CUresult, cuPointerGetAttribute, (void *, int, CUdeviceptr));

    int n = -1, can = -1, value = -1;
    EXPECT_RC(cuInit(0), 0, "init");
    EXPECT_RC(cuDeviceGetCount(&n), 0, "count");
    expect(n == (single ? 1 : 2), "device count", "got %lld, wanted %lld", n, single ? 1 : 2);
    /* A device and itself: no peer (cuDeviceCanAccessPeer says 0). */
    EXPECT_RC(cuDeviceCanAccessPeer(&can, 0, 0), 0, "can access self");
    expect(can == 0, "a device is not its own peer", "got %lld, wanted %lld", can, 0);
    EXPECT_RC(cuDeviceGetP2PAttribute(&value, P2P_ACCESS_SUPPORTED, 0, 0), INVALID_DEVICE,
              "p2p attribute of a device and itself");
    EXPECT_RC(cuDeviceCanAccessPeer(&can, 0, n), INVALID_DEVICE, "can access: no such device");
    if (single) {
        printf("done failures=%d\n", test_failures);
        return test_failures ? 1 : 0;
    }

    /* The links name host ordinals: in either CUDA_VISIBLE_DEVICES order
     * both guest devices reach each other. */
    for (int d = 0; d < 2; d++) {
        char name[64];
        snprintf(name, sizeof name, "can access %d -> %d", d, 1 - d);
        can = -1;
        EXPECT_RC(cuDeviceCanAccessPeer(&can, d, 1 - d), 0, name);
        expect(can == 1, name, "got %lld, wanted %lld", can, 1);
        snprintf(name, sizeof name, "p2p access supported %d -> %d", d, 1 - d);
        value = -1;
        EXPECT_RC(cuDeviceGetP2PAttribute(&value, P2P_ACCESS_SUPPORTED, d, 1 - d), 0, name);
        expect(value == 1, name, "got %lld, wanted %lld", value, 1);
        snprintf(name, sizeof name, "p2p native atomics %d -> %d", d, 1 - d);
        value = -1;
        EXPECT_RC(cuDeviceGetP2PAttribute(&value, P2P_NATIVE_ATOMIC_SUPPORTED, d, 1 - d), 0, name);
        expect(value == 0, name, "got %lld, wanted %lld (PCIe)", value, 0);
    }
    EXPECT_RC(cuDeviceGetP2PAttribute(&value, P2P_PERFORMANCE_RANK, 0, 1), 0, "p2p rank");
    EXPECT_RC(cuDeviceGetP2PAttribute(&value, 99, 0, 1), INVALID_VALUE, "p2p: unknown attribute");
    EXPECT_RC(cuDeviceGetP2PAttribute(NULL, P2P_ACCESS_SUPPORTED, 0, 1), INVALID_VALUE,
              "p2p: NULL value");

    /* ---- peer access between contexts ---- */
    CUcontext c0, c0b, c1;
    EXPECT_RC(cuCtxCreate_v2(&c1, 0, 1), 0, "context on device 1");
    EXPECT_RC(cuCtxCreate_v2(&c0b, 0, 0), 0, "second context on device 0");
    EXPECT_RC(cuCtxCreate_v2(&c0, 0, 0), 0, "context on device 0");
    EXPECT_RC(cuCtxEnablePeerAccess(c1, 1), INVALID_VALUE, "enable: flags");
    EXPECT_RC(cuCtxEnablePeerAccess(NULL, 0), INVALID_CONTEXT, "enable: NULL context");
    EXPECT_RC(cuCtxEnablePeerAccess(c0, 0), INVALID_CONTEXT, "enable: the current context");
    EXPECT_RC(cuCtxEnablePeerAccess(c0b, 0), PEER_ACCESS_UNSUPPORTED,
              "enable: a context of the same device");
    EXPECT_RC(cuCtxDisablePeerAccess(c1), PEER_ACCESS_NOT_ENABLED, "disable before enable");
    EXPECT_RC(cuCtxEnablePeerAccess(c1, 0), 0, "enable");
    EXPECT_RC(cuCtxEnablePeerAccess(c1, 0), PEER_ACCESS_ALREADY_ENABLED, "enable twice");
    EXPECT_RC(cuCtxDisablePeerAccess(c1), 0, "disable");
    EXPECT_RC(cuCtxDisablePeerAccess(c1), PEER_ACCESS_NOT_ENABLED, "disable twice");
    EXPECT_RC(cuCtxEnablePeerAccess(c1, 0), 0, "enable again");
    /* No current context: cuCtxCreate pushed three, each pop makes the one
     * below current. */
    CUcontext cur = NULL;
    for (int i = 0; i < 3; i++) cuCtxPopCurrent_v2(NULL);
    EXPECT_RC(cuCtxGetCurrent(&cur), 0, "get current");
    expect(cur == NULL, "no current context", "current %#llx, wanted %lld (none)", (long long)(uintptr_t)cur, 0);
    EXPECT_RC(cuCtxEnablePeerAccess(c1, 0), INVALID_CONTEXT, "enable without a context");
    EXPECT_RC(cuCtxDisablePeerAccess(c1), INVALID_CONTEXT, "disable without a context");

    /* ---- copies between the devices, pointer ordinals ---- */
    static unsigned char src[N], back[N];
    for (int i = 0; i < N; i++) src[i] = (unsigned char)(i * 7 + 3);
    CUdeviceptr a = 0, b = 0, b2 = 0;
    EXPECT_RC(cuCtxSetCurrent(c0), 0, "current c0");
    EXPECT_RC(cuMemAlloc_v2(&a, N), 0, "alloc on device 0");
    EXPECT_RC(cuMemcpyHtoD_v2(a, src, N), 0, "fill device 0");
    EXPECT_RC(cuCtxSetCurrent(c1), 0, "current c1");
    EXPECT_RC(cuMemAlloc_v2(&b, N), 0, "alloc on device 1");
    EXPECT_RC(cuMemAlloc_v2(&b2, N), 0, "alloc 2 on device 1");
    int ord = -1;
    EXPECT_RC(cuPointerGetAttribute(&ord, POINTER_ATTRIBUTE_DEVICE_ORDINAL, a), 0, "ordinal a");
    expect(ord == 0, "device 0 memory has ordinal 0", "got %lld, wanted %lld", ord, 0);
    EXPECT_RC(cuPointerGetAttribute(&ord, POINTER_ATTRIBUTE_DEVICE_ORDINAL, b), 0, "ordinal b");
    expect(ord == 1, "device 1 memory has ordinal 1", "got %lld, wanted %lld", ord, 1);

    EXPECT_RC(cuMemcpyPeer(b, c1, a, c0, N), 0, "peer copy 0 -> 1");
    memset(back, 0, N);
    EXPECT_RC(cuMemcpyDtoH_v2(back, b, N), 0, "read device 1");
    expect(memcmp(back, src, N) == 0, "peer copy bytes", "byte 1 %lld, wanted %lld", back[1],
           src[1]);
    CUstream s;
    EXPECT_RC(cuStreamCreate(&s, 0), 0, "stream on device 1");
    EXPECT_RC(cuMemcpyPeerAsync(b2 + 16, c1, a, c0, N - 16, s), 0, "async peer copy");
    EXPECT_RC(cuStreamSynchronize(s), 0, "async peer copy sync");
    memset(back, 0, N);
    EXPECT_RC(cuMemcpyDtoH_v2(back, b2 + 16, N - 16), 0, "read device 1 again");
    expect(memcmp(back, src, N - 16) == 0, "async peer copy bytes", "byte 1 %lld, wanted %lld",
           back[1], src[1]);
    EXPECT_RC(cuMemcpyPeer(b, c1, a, c0, 0), 0, "empty peer copy");
    EXPECT_RC(cuMemcpyPeer(b, c1, a + N - 8, c0, 16), INVALID_VALUE, "peer copy past the end");
    EXPECT_RC(cuMemcpyPeer(b, NULL, a, c0, 16), INVALID_CONTEXT, "peer copy: NULL context");

    EXPECT_RC(cuCtxDestroy_v2(c0b), 0, "destroy");
    printf("done failures=%d\n", test_failures);
    return test_failures ? 1 : 0;
}
