// What ggml's CUDA backend file (ggml-cuda.cu, not built here: it pulls in
// every op and every kernel instance) provides to the kernel files that
// tests/ggml_kernels.rs builds: the device table, the current device, error
// reporting, the backend context's stream cleanup and memory pool, and the
// converters fattn-common.cuh names for K/V types other than F16 (the check
// passes F16 K and V, so those are never reached). Written for the
// declarations in ggml's common.cuh, convert.cuh and fattn-common.cuh
// (docs/clients.md "ggml's CUDA kernels").
#include "common.cuh"
#include "convert.cuh"
#include "fattn-common.cuh"

#include <cstdio>
#include <cstdlib>
#include <memory>

[[noreturn]] void ggml_cuda_error(const char *stmt, const char *func, const char *file, int line,
                                  const char *msg) {
    fprintf(stderr, "ggml CUDA error: %s\n  in %s at %s:%d\n  %s\n", msg, func, file, line, stmt);
    fflush(stdout);
    exit(3);
}

int ggml_cuda_get_device() {
    int id = -1;
    CUDA_CHECK(cudaGetDevice(&id));
    return id;
}

void ggml_cuda_set_device(int device) {
    if (ggml_cuda_get_device() != device) {
        CUDA_CHECK(cudaSetDevice(device));
    }
}

// The fields ggml's kernels and launchers read, from the runtime's device
// properties, as ggml_cuda_init computes them (cc = 100 * major + 10 * minor).
static ggml_cuda_device_info device_table() {
    ggml_cuda_device_info info = {};
    CUDA_CHECK(cudaGetDeviceCount(&info.device_count));
    if (info.device_count > GGML_CUDA_MAX_DEVICES) {
        info.device_count = GGML_CUDA_MAX_DEVICES;
    }
    info.physical_device_count = info.device_count;
    for (int id = 0; id < info.device_count; ++id) {
        cudaDeviceProp prop;
        CUDA_CHECK(cudaGetDeviceProperties(&prop, id));
        auto &d = info.devices[id];
        d.cc = 100 * prop.major + 10 * prop.minor;
        d.nsm = prop.multiProcessorCount;
        d.smpb = prop.sharedMemPerBlock;
        d.smpbo = prop.sharedMemPerBlockOptin;
        d.integrated = prop.integrated != 0;
        d.vmm = false;
        d.vmm_granularity = 0;
        d.total_vram = prop.totalGlobalMem;
        d.warp_size = prop.warpSize;
        d.supports_cooperative_launch = prop.cooperativeLaunch != 0;
        d.physical_device = id;
        d.physical_share_count = 1;
        d.virtual_index = 0;
        info.default_tensor_split[id] = 0.0f;
    }
    return info;
}

const ggml_cuda_device_info &ggml_cuda_info() {
    static const ggml_cuda_device_info info = device_table();
    return info;
}

// A pool that allocates and frees at once: ggml's own pools only cache.
struct plain_pool : ggml_cuda_pool {
    explicit plain_pool(int device) : device(device) {}
    void *alloc(size_t size, size_t *actual_size) override {
        ggml_cuda_set_device(device);
        void *ptr = nullptr;
        CUDA_CHECK(cudaMalloc(&ptr, size));
        *actual_size = size;
        return ptr;
    }
    void free(void *ptr, size_t) override { CUDA_CHECK(cudaFree(ptr)); }
    int device;
};

std::unique_ptr<ggml_cuda_pool> ggml_backend_cuda_context::new_pool_for_device(int device, int) {
    return std::unique_ptr<ggml_cuda_pool>(new plain_pool(device));
}

ggml_backend_cuda_context::~ggml_backend_cuda_context() {
    for (auto &per_device : streams) {
        for (cudaStream_t s : per_device) {
            if (s != nullptr) {
                CUDA_CHECK(cudaStreamDestroy(s));
            }
        }
    }
    if (copy_event != nullptr) {
        CUDA_CHECK(cudaEventDestroy(copy_event));
    }
}

[[noreturn]] static void not_built(const char *what) {
    fprintf(stderr, "tests/ggml: %s is not built into this check\n", what);
    exit(3);
}

to_fp16_cuda_t ggml_get_to_fp16_cuda(ggml_type) { not_built("ggml_get_to_fp16_cuda"); }

to_fp16_nc_cuda_t ggml_get_to_fp16_nc_cuda(ggml_type) { not_built("ggml_get_to_fp16_nc_cuda"); }

void ggml_cuda_flash_attn_ext_compact_mask(const ggml_tensor *, int32_t *, int32_t *, int32_t,
                                           int32_t, int32_t, cudaStream_t) {
    not_built("the sparse flash-attention mask");
}
