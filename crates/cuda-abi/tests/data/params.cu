// Kernels whose parameters mix sizes and alignments, for the parameter-layout
// tests (tests/params.rs, which mirrors these types in #[repr(C)] Rust).
// Built by make.sh.
struct S12 { int a, b, c; };              // 12 bytes, align 4
struct S40 { double d[4]; char c; };      // 40 bytes, align 8
struct __align__(16) A16 { int v[5]; };   // 32 bytes, align 16

extern "C" __global__ void mixed(char c, short s, int i, double d, float *p,
                                 S12 s12, S40 s40, char tail) {
    if (p) p[threadIdx.x] = c + s + i + d + s12.a + s12.c + s40.d[3] + s40.c + tail;
}

extern "C" __global__ void grid_const(const __grid_constant__ S40 g, int *out, A16 a) {
    out[threadIdx.x] = (int)g.d[threadIdx.x & 3] + a.v[4];
}

extern "C" __global__ void vectors(bool b, float4 v, int2 w, const float *__restrict__ r,
                                   long long x, short2 h) {
    if (b) ((float *)r)[0] = v.w + w.y + x + h.y;
}

extern "C" __global__ void no_params() {}

// Parameters the kernel never reads are still in the layout.
extern "C" __global__ void unused(int a, double b, char c) {}

// C++ linkage: layouts are keyed by the mangled name.
template <typename T>
__global__ void scale(T *x, T k, unsigned long long n) {
    unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= k;
}
template __global__ void scale<float>(float *, float, unsigned long long);
template __global__ void scale<short>(short *, short, unsigned long long);
