// Test kernels for vgpu-ptx. The .ptx files next to this are generated from
// it by regen.sh and committed, so the tests need no CUDA toolkit.

extern "C" __global__ void vadd(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

#define TILE 16
extern "C" __global__ void matmul(const float *A, const float *B, float *C, int n) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (int t = 0; t < n / TILE; ++t) {
        As[threadIdx.y][threadIdx.x] = A[row * n + t * TILE + threadIdx.x];
        Bs[threadIdx.y][threadIdx.x] = B[(t * TILE + threadIdx.y) * n + col];
        __syncthreads();
        for (int k = 0; k < TILE; ++k) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();
    }
    C[row * n + col] = acc;
}

// Sum of in[0..n) into *out: warp shuffles, then one atomic per warp.
extern "C" __global__ void warp_reduce(const int *in, int *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = i < n ? in[i] : 0;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffff, v, off);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, v);
}

// Exercises the other warp collectives; one int per thread in out[8*tid..].
extern "C" __global__ void warp_ops(const int *in, int *out) {
    int t = threadIdx.x;
    int lane = t & 31;
    int v = in[t];
    int *o = out + 8 * t;
    o[0] = __shfl_up_sync(0xffffffff, v, 3);
    o[1] = __shfl_xor_sync(0xffffffff, v, 5);
    o[2] = __shfl_sync(0xffffffff, v, 7);
    o[3] = __shfl_sync(0xffffffff, v, lane ^ 1, 8);
    o[4] = __ballot_sync(0xffffffff, v & 1);
    o[5] = __all_sync(0xffffffff, v >= 0) | (__any_sync(0xffffffff, v > 1000) << 1);
    if (lane < 20) {
        o[6] = __activemask();
    } else {
        o[6] = -1;
    }
    __syncwarp();
    o[7] = __syncthreads_count(v & 1);
}

extern "C" __global__ void histogram(const unsigned char *data, int n, unsigned int *hist_global,
                                     unsigned int *hist_direct) {
    __shared__ unsigned int local[256];
    for (int k = threadIdx.x; k < 256; k += blockDim.x) local[k] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        atomicAdd(&local[data[i]], 1u);
        atomicAdd(&hist_direct[data[i]], 1u);
    }
    __syncthreads();
    for (int k = threadIdx.x; k < 256; k += blockDim.x) atomicAdd(&hist_global[k], local[k]);
}

struct Params {
    float scale;
    double offset;
    char tag[3];
};
struct __align__(16) Big {
    int v[5];
};
extern "C" __global__ void by_value(Params p, char c, Big big, short s, float *out, double d) {
    int i = threadIdx.x;
    out[i] = p.scale * i + (float)p.offset + p.tag[i % 3] + c + big.v[i % 5] + s + (float)d;
}

extern "C" __global__ void reverse_dyn(float *data) {
    extern __shared__ float buf[];
    int t = threadIdx.x;
    int base = blockIdx.x * blockDim.x;
    buf[t] = data[base + t];
    __syncthreads();
    data[base + t] = buf[blockDim.x - 1 - t];
}

__device__ __noinline__ float poly(float x, int k, float *side) {
    *side = x * 2.0f;
    return x * x * k + 1.0f;
}
__device__ __noinline__ int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

extern "C" __global__ void calls(float *out, int *fibs) {
    int i = threadIdx.x;
    float side;
    out[2 * i] = poly((float)i, i + 1, &side);
    out[2 * i + 1] = side;
    fibs[i] = fib(i % 16);
}

extern "C" __global__ void int_math(const int *a, const int *b, int *out) {
    int i = threadIdx.x;
    int x = a[i], y = b[i];
    unsigned ux = (unsigned)x, uy = (unsigned)y;
    int *o = out + 12 * i;
    o[0] = x / y;
    o[1] = x % y;
    o[2] = (int)(ux / uy);
    o[3] = (int)(ux % uy);
    o[4] = min(x, y) + max(x, y) * 3;
    o[5] = abs(x);
    o[6] = __popc(ux);
    o[7] = __clz(x);
    o[8] = (int)__brev(ux);
    o[9] = __mulhi(x, y);
    o[10] = (int)(((long long)x * y) >> 7);
    o[11] = (x << (y & 7)) ^ (int)(ux >> (uy & 15));
}

extern "C" __global__ void float_math(const float *a, float *out, double *dout) {
    int i = threadIdx.x;
    float x = a[i];
    float *o = out + 12 * i;
    o[0] = sqrtf(x);
    o[1] = expf(x * 0.1f);
    o[2] = sinf(x);
    o[3] = cosf(x);
    o[4] = logf(x + 1.0f);
    o[5] = __fdividef(x, 3.0f);
    o[6] = x / 7.0f;
    o[7] = rsqrtf(x + 1.0f);
    o[8] = floorf(x * 0.3f) + roundf(x * 0.7f);
    o[9] = fminf(x, 5.0f) + fmaxf(x, 2.0f);
    o[10] = tanhf(x * 0.05f);
    o[11] = (float)(int)(x * 1.7f) + __float2int_rn(x * 0.5f);
    dout[2 * i] = sqrt((double)x) * exp((double)x * 0.01);
    dout[2 * i + 1] = (double)x / 3.0;
}

extern "C" __global__ void oob_write(float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i + n] = 1.0f;
}
