// Shared by tests/ggml's translation units: the entry points ggml_instances.cu
// instantiates from ggml's templates, and the shapes they are instantiated
// for (docs/clients.md "ggml's CUDA kernels").
#pragma once

#include "common.cuh"

// MMQ: src1 has this many columns (tokens), so ggml's tile-width choice
// (mul_mat_q_switch_J) picks this tile width J for an H100-class device, and
// only that one is instantiated (ggml's own instance files build all 16).
constexpr int CHECK_MMQ_COLS = 32;

// Flash attention: head size 128 with 4 query heads per KV head over 8
// tokens, which ggml's kernel choice (fattn.cu) sends to the MMA kernel with
// ncols1 = 8 tokens and ncols2 = 4 heads per tile.
constexpr int CHECK_FA_D = 128;
constexpr int CHECK_FA_NCOLS1 = 8;
constexpr int CHECK_FA_NCOLS2 = 4;

// mmq.cu's ggml_cuda_mul_mat_q for one weight type, without expert ids: src1
// quantized to block_q8_1_mmq by quantize_mmq_q8_1_cuda, then ggml's
// launch_mul_mat_q. Returns the tile width ggml's choice asked for, which
// must be CHECK_MMQ_COLS (else nothing was launched).
int check_mul_mat_q(ggml_backend_cuda_context &ctx, const ggml_tensor *src0, const ggml_tensor *src1,
                    ggml_tensor *dst);

// ggml_cuda_flash_attn_ext_mma_f16_case for the shape above.
void check_flash_attn_mma(ggml_backend_cuda_context &ctx, ggml_tensor *dst);
