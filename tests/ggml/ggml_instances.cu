// ggml's quantized matrix multiplication (mmq.cuh) and MMA flash attention
// (fattn-mma-f16.cuh) instantiated for the shapes of ggml_check.h only:
// ggml's own instance files build every tile width and head size, which
// would take most of an hour on two cores. The host logic that picks and
// launches the kernels is ggml's; what mmq.cu adds around it for a plain
// (expert-less) product is restated in check_mul_mat_q, which asserts the
// same choice (docs/clients.md "ggml's CUDA kernels").
#include "ggml_check.h"

#include "fattn-mma-f16.cuh"
#include "mmq.cuh"
#include "quantize.cuh"

#include <climits>

// The tile width mul_mat_q_switch_J (mmq.cuh) chooses for these arguments.
static int chosen_J(ggml_type type, const mmq_args &args, int cc, size_t smpbo) {
    int best = 0;
    int64_t best_tiles = INT_MAX;
    for (int J = 8; J <= 128 && best_tiles > 1; J += 8) {
        const ggml_cuda_mmq_config config = ggml_cuda_mmq_get_config(type, J, false, cc);
        if (config.type == GGML_TYPE_COUNT || mmq_get_nbytes_shared(config, cc) > smpbo) {
            continue;
        }
        const int64_t tiles = (args.ncols_opt + config.J - 1) / config.J;
        if (tiles < best_tiles) {
            best = J;
            best_tiles = tiles;
        }
    }
    return best;
}

int check_mul_mat_q(ggml_backend_cuda_context &ctx, const ggml_tensor *src0, const ggml_tensor *src1,
                    ggml_tensor *dst) {
    GGML_ASSERT(src1->type == GGML_TYPE_F32 && dst->type == GGML_TYPE_F32);
    GGML_ASSERT(ggml_is_contiguous(src0) && ggml_is_contiguous(src1) && ggml_is_contiguous(dst));
    // Only the unchecked kernels are instantiated: whole 128-row tiles.
    GGML_ASSERT(src0->ne[1] % 128 == 0);
    GGML_ASSERT(src0->ne[2] == 1 && src0->ne[3] == 1 && src1->ne[2] == 1 && src1->ne[3] == 1);

    const int id = ggml_cuda_get_device();
    const int cc = ggml_cuda_info().devices[id].cc;
    cudaStream_t stream = ctx.stream();

    const int64_t ne00 = src0->ne[0], ne01 = src0->ne[1];
    const int64_t ne10 = src1->ne[0], ne11 = src1->ne[1];
    const int64_t ne10_padded = GGML_PAD(ne10, MATRIX_ROW_PADDING);
    const size_t ts_src0 = ggml_type_size(src0->type);

    const size_t nbytes_src1_q8_1 = ne11 * ne10_padded * sizeof(block_q8_1_mmq) / QK8_1_MMQ +
                                    ggml_cuda_mmq_get_J_max(src0->type, false, cc, ne11) * sizeof(block_q8_1_mmq);
    ggml_cuda_pool_alloc<char> src1_q8_1(ctx.pool(), nbytes_src1_q8_1);
    const int64_t s11 = src1->nb[1] / sizeof(float);
    quantize_mmq_q8_1_cuda((const float *)src1->data, nullptr, src1_q8_1.get(), src0->type, ne10, s11,
                           s11 * ne11, s11 * ne11, ne10_padded, ne11, 1, 1, stream);
    CUDA_CHECK(cudaGetLastError());

    const int64_t s12 = ne11 * ne10_padded * sizeof(block_q8_1) / (QK8_1 * sizeof(int));
    const int64_t s1 = dst->nb[1] / sizeof(float);
    const int64_t s01 = src0->nb[1] / ts_src0;
    const mmq_args args = {(const char *)src0->data, src0->type, (const int *)src1_q8_1.ptr, nullptr, nullptr,
                           (float *)dst->data, nullptr, ne00, ne01, ne11, s01, ne11, s1,
                           1, 1, s01 * ne01, s12, s1 * ne11,
                           1, 1, s01 * ne01, s12, s1 * ne11,
                           ne11, ne11};

    const int J = chosen_J(src0->type, args, cc, ggml_cuda_info().devices[id].smpbo);
    if (J != CHECK_MMQ_COLS) {
        return J;
    }
    switch (src0->type) {
    case GGML_TYPE_Q4_K:
        launch_mul_mat_q<GGML_TYPE_Q4_K, CHECK_MMQ_COLS, false>(ctx, args, stream);
        break;
    case GGML_TYPE_Q8_0:
        launch_mul_mat_q<GGML_TYPE_Q8_0, CHECK_MMQ_COLS, false>(ctx, args, stream);
        break;
    default:
        GGML_ABORT("tests/ggml: MMQ is instantiated for Q4_K and Q8_0 only");
    }
    CUDA_CHECK(cudaGetLastError());
    return J;
}

template void ggml_cuda_flash_attn_ext_mma_f16_case<CHECK_FA_D, CHECK_FA_D, CHECK_FA_NCOLS1, CHECK_FA_NCOLS2>(
    ggml_backend_cuda_context &ctx, ggml_tensor *dst);

void check_flash_attn_mma(ggml_backend_cuda_context &ctx, ggml_tensor *dst) {
    ggml_cuda_flash_attn_ext_mma_f16_case<CHECK_FA_D, CHECK_FA_D, CHECK_FA_NCOLS1, CHECK_FA_NCOLS2>(ctx, dst);
}
