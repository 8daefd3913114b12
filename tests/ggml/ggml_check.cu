// Checks ggml's CUDA kernels, built from ggml's own sources for compute_90
// PTX as Ollama builds them, against CPU references written here
// (tests/ggml_kernels.rs; docs/clients.md "ggml's CUDA kernels"). Each op is
// set up with ggml's graph API (so its parameters are packed by ggml itself)
// and run through ggml's host launcher on random inputs with fixed seeds.
//
//   ggml_check [NAME...]     every check, or only those named
//
// Prints "checks NAME..." (the plan), then "NAME ok=1 worst=W n=N ms=T" per check, where W is the largest
// error divided by its tolerance (ok when W <= 1), then "done ok=1" when all
// passed; exits 1 when one failed, 3 on a CUDA error (message on stderr).
#include "ggml_check.h"

#include "ggml-backend-impl.h"
#include "mmvq.cuh"
#include "norm.cuh"
#include "rope.cuh"
#include "softmax.cuh"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// ---------------------------------------------------------------- helpers

// splitmix64: a fixed sequence per seed.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    // Uniform in [lo, hi).
    float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next() >> 40) * (1.0 / 16777216.0)); }
    uint8_t byte() { return (uint8_t)(next() >> 56); }
};

// IEEE binary16 -> float, written out so the references do not lean on the
// toolkit's conversions.
static float half_bits_to_float(uint16_t h) {
    const int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
    float v;
    if (exp == 0) {
        v = std::ldexp((float)man, -24);
    } else if (exp == 31) {
        v = man ? NAN : INFINITY;
    } else {
        v = std::ldexp((float)(man | 1024), exp - 25);
    }
    return sign ? -v : v;
}

static uint16_t float_to_half_bits(float f) {
    const half h = __float2half_rn(f);
    uint16_t bits;
    memcpy(&bits, &h, 2);
    return bits;
}

// Device memory freed at exit (the process ends after the checks).
static void *device_copy(const void *host, size_t size) {
    void *d = nullptr;
    // Slack past the end: ggml's buffers pad quantized rows the same way.
    CUDA_CHECK(cudaMalloc(&d, size + 4096));
    CUDA_CHECK(cudaMemset(d, 0, size + 4096));
    if (host) {
        CUDA_CHECK(cudaMemcpy(d, host, size, cudaMemcpyHostToDevice));
    }
    return d;
}

template <typename T> static void *device_vec(const std::vector<T> &v) {
    return device_copy(v.data(), v.size() * sizeof(T));
}

static std::vector<float> read_back(const ggml_tensor *t) {
    std::vector<float> out(ggml_nelements(t));
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(out.data(), t->data, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return out;
}

// What ggml's CUDA buffers report for model weights: mmvq.cu asks.
static void *weights_base(ggml_backend_buffer_t buffer) { return buffer->context; }

static void place_weights(ggml_tensor *t, const std::vector<uint8_t> &bytes) {
    GGML_ASSERT(bytes.size() == ggml_nbytes(t));
    t->data = device_vec(bytes);
    ggml_backend_buffer_i iface = {};
    iface.get_base = weights_base;
    t->buffer = ggml_backend_buffer_init(nullptr, iface, t->data, bytes.size());
    ggml_backend_buffer_set_usage(t->buffer, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
}

static ggml_context *new_graph_context() {
    ggml_init_params p = {};
    p.mem_size = 1 << 20;
    p.mem_buffer = nullptr;
    p.no_alloc = true;
    return ggml_init(p);
}

static std::vector<float> random_floats(size_t n, uint64_t seed, float lo, float hi) {
    Rng r(seed);
    std::vector<float> v(n);
    for (float &x : v) {
        x = r.uniform(lo, hi);
    }
    return v;
}

// The largest |got - want| / tol(i) over all elements; NaN anywhere fails.
struct Compare {
    double worst = 0.0;
    size_t worst_at = 0;
    bool nan = false;
    void add(size_t i, double got, double want, double tol) {
        if (std::isnan(got) || std::isnan(want)) {
            nan = true;
            return;
        }
        const double r = std::fabs(got - want) / tol;
        if (r > worst) {
            worst = r;
            worst_at = i;
        }
    }
};

static int failures = 0;

static void report(const char *name, const Compare &c, size_t n, double ms, const std::vector<float> &got,
                   const std::vector<double> &want) {
    const bool ok = !c.nan && c.worst <= 1.0;
    printf("%s ok=%d worst=%.4g n=%zu ms=%.0f", name, ok ? 1 : 0, c.nan ? INFINITY : c.worst, n, ms);
    if (!ok && c.worst_at < got.size()) {
        printf(" at=%zu got=%.9g want=%.9g", c.worst_at, got[c.worst_at], want[c.worst_at]);
    }
    printf("\n");
    fflush(stdout);
    if (!ok) {
        ++failures;
    }
}

using Clock = std::chrono::steady_clock;
static double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------- softmax

// softmax(x * scale + mask) along rows, as ggml_soft_max_ext defines it.
static void check_softmax(ggml_backend_cuda_context &ctx, const char *name, int ncols, int nrows, bool masked,
                          uint64_t seed) {
    ggml_context *g = new_graph_context();
    const float scale = 0.125f;
    ggml_tensor *a = ggml_new_tensor_2d(g, GGML_TYPE_F32, ncols, nrows);
    ggml_tensor *mask = masked ? ggml_new_tensor_2d(g, GGML_TYPE_F16, ncols, nrows) : nullptr;
    ggml_tensor *out = ggml_soft_max_ext(g, a, mask, scale, 0.0f);

    std::vector<float> x = random_floats((size_t)ncols * nrows, seed, -8.0f, 8.0f);
    std::vector<uint16_t> m((size_t)ncols * nrows);
    Rng r(seed + 1);
    for (int i = 0; i < nrows; ++i) {
        for (int j = 0; j < ncols; ++j) {
            // Causal: row i sees columns up to ncols - nrows + i.
            const bool hidden = j > ncols - nrows + i;
            m[(size_t)i * ncols + j] = float_to_half_bits(hidden ? -INFINITY : r.uniform(-2.0f, 0.0f));
        }
    }
    a->data = device_vec(x);
    if (mask) {
        mask->data = device_vec(m);
    }
    out->data = device_copy(nullptr, ggml_nbytes(out));

    const auto t0 = Clock::now();
    ggml_cuda_op_soft_max(ctx, out);
    std::vector<float> got = read_back(out);
    const double ms = ms_since(t0);

    std::vector<double> want(got.size());
    Compare c;
    for (int i = 0; i < nrows; ++i) {
        std::vector<double> z(ncols);
        double zmax = -INFINITY;
        for (int j = 0; j < ncols; ++j) {
            const size_t k = (size_t)i * ncols + j;
            z[j] = (double)x[k] * scale + (mask ? half_bits_to_float(m[k]) : 0.0);
            zmax = std::fmax(zmax, z[j]);
        }
        double sum = 0.0;
        for (int j = 0; j < ncols; ++j) {
            sum += std::exp(z[j] - zmax);
        }
        for (int j = 0; j < ncols; ++j) {
            const size_t k = (size_t)i * ncols + j;
            want[k] = std::exp(z[j] - zmax) / sum;
            // fast-math exp: a few ulp relative.
            c.add(k, got[k], want[k], 1e-6 + 1e-4 * want[k]);
        }
    }
    report(name, c, got.size(), ms, got, want);
    ggml_free(g);
}

// ---------------------------------------------------------------- rms_norm

static void check_rms_norm(ggml_backend_cuda_context &ctx, const char *name, int ncols, int nrows, uint64_t seed) {
    ggml_context *g = new_graph_context();
    const float eps = 1e-5f;
    ggml_tensor *a = ggml_new_tensor_2d(g, GGML_TYPE_F32, ncols, nrows);
    ggml_tensor *out = ggml_rms_norm(g, a, eps);

    std::vector<float> x = random_floats((size_t)ncols * nrows, seed, -3.0f, 3.0f);
    a->data = device_vec(x);
    out->data = device_copy(nullptr, ggml_nbytes(out));

    const auto t0 = Clock::now();
    ggml_cuda_op_rms_norm(ctx, out);
    std::vector<float> got = read_back(out);
    const double ms = ms_since(t0);

    std::vector<double> want(got.size());
    Compare c;
    for (int i = 0; i < nrows; ++i) {
        double ss = 0.0;
        for (int j = 0; j < ncols; ++j) {
            ss += (double)x[(size_t)i * ncols + j] * x[(size_t)i * ncols + j];
        }
        const double inv = 1.0 / std::sqrt(ss / ncols + eps);
        for (int j = 0; j < ncols; ++j) {
            const size_t k = (size_t)i * ncols + j;
            want[k] = x[k] * inv;
            c.add(k, got[k], want[k], 1e-5 + 1e-5 * std::fabs(want[k]));
        }
    }
    report(name, c, got.size(), ms, got, want);
    ggml_free(g);
}

// ---------------------------------------------------------------- rope

// Rotary embedding without YaRN (ext_factor 0, freq_scale 1): pair p of a
// head turns by pos * base^(-2p/n_dims). The normal mode pairs neighbours
// (2p, 2p+1), NeoX pairs p with p + n_dims/2.
static void check_rope(ggml_backend_cuda_context &ctx, const char *name, int mode, uint64_t seed) {
    const int head_dim = 128, n_head = 8;
    const std::vector<int32_t> pos = {0, 1, 5, 17, 64, 255};
    const int n_tokens = (int)pos.size();
    const float base = 10000.0f;

    ggml_context *g = new_graph_context();
    ggml_tensor *a = ggml_new_tensor_3d(g, GGML_TYPE_F32, head_dim, n_head, n_tokens);
    ggml_tensor *p = ggml_new_tensor_1d(g, GGML_TYPE_I32, n_tokens);
    ggml_tensor *out =
        ggml_rope_ext(g, a, p, nullptr, head_dim, mode, 4096, base, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);

    std::vector<float> x = random_floats((size_t)head_dim * n_head * n_tokens, seed, -1.0f, 1.0f);
    a->data = device_vec(x);
    p->data = device_vec(pos);
    out->data = device_copy(nullptr, ggml_nbytes(out));

    const auto t0 = Clock::now();
    ggml_cuda_op_rope(ctx, out);
    std::vector<float> got = read_back(out);
    const double ms = ms_since(t0);

    std::vector<double> want(got.size());
    Compare c;
    const bool neox = mode == GGML_ROPE_TYPE_NEOX;
    for (int t = 0; t < n_tokens; ++t) {
        for (int h = 0; h < n_head; ++h) {
            const size_t row = ((size_t)t * n_head + h) * head_dim;
            for (int pair = 0; pair < head_dim / 2; ++pair) {
                const size_t i0 = row + (neox ? pair : 2 * pair);
                const size_t i1 = row + (neox ? pair + head_dim / 2 : 2 * pair + 1);
                const double theta = pos[t] * std::pow((double)base, -2.0 * pair / head_dim);
                want[i0] = x[i0] * std::cos(theta) - x[i1] * std::sin(theta);
                want[i1] = x[i0] * std::sin(theta) + x[i1] * std::cos(theta);
            }
            for (int j = 0; j < head_dim; ++j) {
                // fast-math sin/cos and powf at angles up to 255 rad.
                c.add(row + j, got[row + j], want[row + j], 2e-3);
            }
        }
    }
    report(name, c, got.size(), ms, got, want);
    ggml_free(g);
}

// ---------------------------------------------------------------- matmul

// Random blocks in ggml's layouts (ggml-common.h): any bytes are valid quants
// and scales; the f16 super-block scales are kept small and positive.
static std::vector<uint8_t> random_blocks(ggml_type type, int64_t k, int64_t rows, uint64_t seed) {
    Rng r(seed);
    const size_t row_bytes = ggml_row_size(type, k);
    std::vector<uint8_t> b(row_bytes * rows);
    for (uint8_t &x : b) {
        x = r.byte();
    }
    const size_t bs = ggml_type_size(type);
    for (size_t off = 0; off < b.size(); off += bs) {
        // Q8_0: d at 0. Q4_K: d at 0, dmin at 2.
        const uint16_t d = float_to_half_bits(r.uniform(0.001f, 0.01f));
        memcpy(&b[off], &d, 2);
        if (type == GGML_TYPE_Q4_K) {
            const uint16_t dmin = float_to_half_bits(r.uniform(0.001f, 0.01f));
            memcpy(&b[off + 2], &dmin, 2);
        }
    }
    return b;
}

// One row of weights as floats, from the block layouts of ggml-common.h:
// Q8_0 is {f16 d; int8 q[32]} with x = d * q; Q4_K is a 256-value
// super-block {f16 d, dmin; u8 scales[12]; u8 qs[128]} of eight 32-value
// sub-blocks whose 6-bit scale and min are packed in `scales`, with
// x = d * scale * q - dmin * min, the low nibbles of 32 bytes holding one
// sub-block and their high nibbles the next.
static std::vector<double> dequantize_row(ggml_type type, const uint8_t *row, int64_t k) {
    std::vector<double> out(k);
    auto f16 = [](const uint8_t *p) {
        uint16_t h;
        memcpy(&h, p, 2);
        return (double)half_bits_to_float(h);
    };
    if (type == GGML_TYPE_Q8_0) {
        for (int64_t blk = 0; blk < k / 32; ++blk) {
            const uint8_t *b = row + blk * 34;
            for (int j = 0; j < 32; ++j) {
                out[blk * 32 + j] = f16(b) * (int8_t)b[2 + j];
            }
        }
        return out;
    }
    GGML_ASSERT(type == GGML_TYPE_Q4_K);
    for (int64_t sb = 0; sb < k / 256; ++sb) {
        const uint8_t *b = row + sb * 144;
        const double d = f16(b), dmin = f16(b + 2);
        const uint8_t *sc = b + 4, *qs = b + 16;
        for (int sub = 0; sub < 8; ++sub) {
            int scale, min;
            if (sub < 4) {
                scale = sc[sub] & 63;
                min = sc[sub + 4] & 63;
            } else {
                scale = (sc[sub + 4] & 15) | ((sc[sub - 4] >> 6) << 4);
                min = (sc[sub + 4] >> 4) | ((sc[sub] >> 6) << 4);
            }
            const uint8_t *q = qs + (sub / 2) * 32;
            for (int j = 0; j < 32; ++j) {
                const int nib = sub % 2 ? q[j] >> 4 : q[j] & 15;
                out[sb * 256 + sub * 32 + j] = d * scale * nib - dmin * min;
            }
        }
    }
    return out;
}

// dst = W y for W of `rows` rows of `k` values in `type` and y of `cols`
// columns, through ggml's MMQ (cols = CHECK_MMQ_COLS) or MMVQ launcher. The
// kernels quantize y to 8 bits per 32 values first, so the tolerance is a
// fraction of sum |w * y| (that rounding gives errors near 2e-4 of it).
static void check_mul_mat(ggml_backend_cuda_context &ctx, const char *name, ggml_type type, bool mmq, int64_t k,
                          int64_t rows, int64_t cols, uint64_t seed) {
    ggml_context *g = new_graph_context();
    ggml_tensor *w = ggml_new_tensor_2d(g, type, k, rows);
    ggml_tensor *y = ggml_new_tensor_2d(g, GGML_TYPE_F32, k, cols);
    ggml_tensor *out = ggml_mul_mat(g, w, y);

    const std::vector<uint8_t> wb = random_blocks(type, k, rows, seed);
    const std::vector<float> yv = random_floats((size_t)k * cols, seed + 1, -1.0f, 1.0f);
    place_weights(w, wb);
    y->data = device_vec(yv);
    out->data = device_copy(nullptr, ggml_nbytes(out));

    const auto t0 = Clock::now();
    if (mmq) {
        const int J = check_mul_mat_q(ctx, w, y, out);
        if (J != CHECK_MMQ_COLS) {
            printf("%s ok=0 ggml chose tile width %d, not the instantiated %d\n", name, J, CHECK_MMQ_COLS);
            ++failures;
            ggml_free(g);
            return;
        }
    } else {
        ggml_cuda_mul_mat_vec_q(ctx, w, y, nullptr, out);
    }
    std::vector<float> got = read_back(out);
    const double ms = ms_since(t0);

    std::vector<double> want(got.size());
    Compare c;
    const size_t row_bytes = ggml_row_size(type, k);
    for (int64_t i = 0; i < rows; ++i) {
        const std::vector<double> wr = dequantize_row(type, wb.data() + i * row_bytes, k);
        for (int64_t j = 0; j < cols; ++j) {
            double dot = 0.0, mag = 0.0;
            for (int64_t l = 0; l < k; ++l) {
                dot += wr[l] * yv[j * k + l];
                mag += std::fabs(wr[l] * yv[j * k + l]);
            }
            const size_t at = j * rows + i;
            want[at] = dot;
            c.add(at, got[at], dot, 2e-3 * mag + 1e-6);
        }
    }
    report(name, c, got.size(), ms, got, want);
    ggml_free(g);
}

// ---------------------------------------------------------------- flash attention

// out[t][h] = sum_j softmax_j(scale * q[t][h] . k[j][h/4] + mask[t][j]) v[j][h/4],
// with the shape of ggml_check.h. The kernel rounds Q and the probabilities
// to f16 (K and V are f16 already) and accumulates in f32: errors near 1e-3
// on outputs bounded by max |v| = 1.
static void check_flash_attn(ggml_backend_cuda_context &ctx, const char *name, uint64_t seed) {
    const int D = CHECK_FA_D, n_tokens = CHECK_FA_NCOLS1, gqa = CHECK_FA_NCOLS2;
    const int n_head_kv = 2, n_head = n_head_kv * gqa, n_kv = 256;
    const float scale = 1.0f / std::sqrt((float)D);

    ggml_context *g = new_graph_context();
    ggml_tensor *q = ggml_new_tensor_3d(g, GGML_TYPE_F32, D, n_tokens, n_head);
    ggml_tensor *kt = ggml_new_tensor_3d(g, GGML_TYPE_F16, D, n_kv, n_head_kv);
    ggml_tensor *vt = ggml_new_tensor_3d(g, GGML_TYPE_F16, D, n_kv, n_head_kv);
    ggml_tensor *mask = ggml_new_tensor_2d(g, GGML_TYPE_F16, n_kv, n_tokens);
    ggml_tensor *out = ggml_flash_attn_ext(g, q, kt, vt, mask, scale, 0.0f, 0.0f);

    const std::vector<float> qv = random_floats((size_t)D * n_tokens * n_head, seed, -2.0f, 2.0f);
    const std::vector<float> kf = random_floats((size_t)D * n_kv * n_head_kv, seed + 1, -1.0f, 1.0f);
    const std::vector<float> vf = random_floats((size_t)D * n_kv * n_head_kv, seed + 2, -1.0f, 1.0f);
    std::vector<uint16_t> kh(kf.size()), vh(vf.size()), mh((size_t)n_kv * n_tokens);
    for (size_t i = 0; i < kf.size(); ++i) {
        kh[i] = float_to_half_bits(kf[i]);
        vh[i] = float_to_half_bits(vf[i]);
    }
    // Causal over a cache whose last n_tokens entries are these tokens.
    for (int t = 0; t < n_tokens; ++t) {
        for (int j = 0; j < n_kv; ++j) {
            mh[(size_t)t * n_kv + j] = float_to_half_bits(j > n_kv - n_tokens + t ? -INFINITY : 0.0f);
        }
    }
    q->data = device_vec(qv);
    kt->data = device_vec(kh);
    vt->data = device_vec(vh);
    mask->data = device_vec(mh);
    out->data = device_copy(nullptr, ggml_nbytes(out));

    const auto t0 = Clock::now();
    check_flash_attn_mma(ctx, out);
    std::vector<float> got = read_back(out);
    const double ms = ms_since(t0);

    // dst is {D, n_head, n_tokens}: ggml_flash_attn_ext permutes heads and tokens.
    std::vector<double> want(got.size());
    Compare c;
    for (int t = 0; t < n_tokens; ++t) {
        for (int h = 0; h < n_head; ++h) {
            const int hk = h / gqa;
            const float *qr = &qv[((size_t)h * n_tokens + t) * D];
            std::vector<double> s(n_kv);
            double smax = -INFINITY;
            for (int j = 0; j < n_kv; ++j) {
                const uint16_t *kr = &kh[((size_t)hk * n_kv + j) * D];
                double dot = 0.0;
                for (int d = 0; d < D; ++d) {
                    dot += (double)qr[d] * half_bits_to_float(kr[d]);
                }
                s[j] = dot * scale + half_bits_to_float(mh[(size_t)t * n_kv + j]);
                smax = std::fmax(smax, s[j]);
            }
            double sum = 0.0;
            for (int j = 0; j < n_kv; ++j) {
                s[j] = std::exp(s[j] - smax);
                sum += s[j];
            }
            for (int d = 0; d < D; ++d) {
                double acc = 0.0;
                for (int j = 0; j < n_kv; ++j) {
                    acc += s[j] * half_bits_to_float(vh[((size_t)hk * n_kv + j) * D + d]);
                }
                const size_t at = ((size_t)t * n_head + h) * D + d;
                want[at] = acc / sum;
                c.add(at, got[at], want[at], 1e-2);
            }
        }
    }
    report(name, c, got.size(), ms, got, want);
    ggml_free(g);
}

// ---------------------------------------------------------------- main

struct Entry {
    const char *name;
    void (*run)(ggml_backend_cuda_context &, const char *);
};

static const Entry CHECKS[] = {
    {"softmax_masked", [](ggml_backend_cuda_context &c, const char *n) { check_softmax(c, n, 256, 16, true, 11); }},
    {"softmax_wide", [](ggml_backend_cuda_context &c, const char *n) { check_softmax(c, n, 5000, 3, false, 12); }},
    {"rms_norm", [](ggml_backend_cuda_context &c, const char *n) { check_rms_norm(c, n, 2048, 4, 21); }},
    {"rope_norm", [](ggml_backend_cuda_context &c, const char *n) { check_rope(c, n, GGML_ROPE_TYPE_NORMAL, 31); }},
    {"rope_neox", [](ggml_backend_cuda_context &c, const char *n) { check_rope(c, n, GGML_ROPE_TYPE_NEOX, 32); }},
    {"mmvq_q4_k", [](ggml_backend_cuda_context &c, const char *n) {
         check_mul_mat(c, n, GGML_TYPE_Q4_K, false, 1024, 256, 1, 41);
     }},
    {"mmvq_q8_0_x3", [](ggml_backend_cuda_context &c, const char *n) {
         check_mul_mat(c, n, GGML_TYPE_Q8_0, false, 1024, 256, 3, 42);
     }},
    {"mmq_q4_k", [](ggml_backend_cuda_context &c, const char *n) {
         check_mul_mat(c, n, GGML_TYPE_Q4_K, true, 512, 128, CHECK_MMQ_COLS, 51);
     }},
    {"mmq_q8_0", [](ggml_backend_cuda_context &c, const char *n) {
         check_mul_mat(c, n, GGML_TYPE_Q8_0, true, 512, 128, CHECK_MMQ_COLS, 52);
     }},
    {"flash_attn_mma", [](ggml_backend_cuda_context &c, const char *n) { check_flash_attn(c, n, 61); }},
};

int main(int argc, char **argv) {
    const ggml_cuda_device_info &info = ggml_cuda_info();
    if (info.device_count < 1) {
        fprintf(stderr, "no CUDA device\n");
        return 3;
    }
    printf("device cc=%d nsm=%d smpbo=%zu\n", info.devices[0].cc, info.devices[0].nsm, info.devices[0].smpbo);
    ggml_backend_cuda_context ctx(0);
    std::vector<const Entry *> plan;
    for (const Entry &e : CHECKS) {
        bool wanted = argc < 2;
        for (int i = 1; i < argc; ++i) {
            wanted |= strcmp(argv[i], e.name) == 0;
        }
        if (wanted) {
            plan.push_back(&e);
        }
    }
    if (plan.empty()) {
        fprintf(stderr, "no check matches the arguments\n");
        return 2;
    }
    printf("checks");
    for (const Entry *e : plan) {
        printf(" %s", e->name);
    }
    printf("\n");
    for (const Entry *e : plan) {
        e->run(ctx, e->name);
    }
    printf("done ok=%d\n", failures == 0 ? 1 : 0);
    return failures == 0 ? 0 : 1;
}
