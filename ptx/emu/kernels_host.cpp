// kernels_host.cpp — every kernel in ptx/kernels compiled for the host
// through emu.h, with one C entry point per kernel for the Rust side:
//   int oxk_emu_<kernel>(grid_x, grid_y, block_x, <kernel's parameters>)
// returning oxk_emu::launch's code (0 = ran).
#include "emu.h"

#include "../kernels/activation.cu"
#include "../kernels/adam.cu"
#include "../kernels/dense.cu"
#include "../kernels/matmul_bf16.cu"
#include "../kernels/matmul_f32.cu"
#include "../kernels/reduce.cu"
#include "../kernels/signal.cu"

#define OXK_UNPAREN(...) __VA_ARGS__
#define OXK_EMU_ENTRY(name, params, args)                                                         \
  extern "C" int oxk_emu_##name(unsigned grid_x, unsigned grid_y, unsigned block_x, OXK_UNPAREN params) { \
    return ::oxk_emu::launch(dim3(grid_x, grid_y), dim3(block_x), [=] { name args; });            \
  }

OXK_EMU_ENTRY(relu_fwd_f32, (const float* x, float* y, size_t n), (x, y, n))
OXK_EMU_ENTRY(relu_bwd_f32, (const float* x, const float* dy, float* dx, size_t n), (x, dy, dx, n))
OXK_EMU_ENTRY(gelu_fwd_f32, (const float* x, float* y, size_t n), (x, y, n))
OXK_EMU_ENTRY(gelu_bwd_f32, (const float* x, const float* dy, float* dx, size_t n), (x, dy, dx, n))
OXK_EMU_ENTRY(adam_f32,
              (float* p, const float* g, float* m, float* v, size_t n, float lr, float beta1, float beta2, float eps,
               float weight_decay, float bc1, float bc2),
              (p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2))
OXK_EMU_ENTRY(matmul_f32, (const float* A, const float* B, float* C, int M, int N, int K), (A, B, C, M, N, K))
OXK_EMU_ENTRY(matmul_bf16, (const uint16_t* A, const uint16_t* B, float* C, int M, int N, int K), (A, B, C, M, N, K))
OXK_EMU_ENTRY(gemm_f32,
              (const float* A, const float* B, float* C, int M, int N, int K, int trans_a, int trans_b, float alpha,
               float beta),
              (A, B, C, M, N, K, trans_a, trans_b, alpha, beta))
OXK_EMU_ENTRY(bias_add_f32, (float* Y, const float* b, size_t rows, size_t cols), (Y, b, rows, cols))
OXK_EMU_ENTRY(bias_grad_f32, (const float* dY, float* db, size_t rows, size_t cols), (dY, db, rows, cols))
OXK_EMU_ENTRY(mse_f32, (const float* P, const float* T, float* dP, float* partial, size_t n, float scale),
              (P, T, dP, partial, n, scale))

// One entry per reducer kernel, for every dtype of reduce.cu's OXK_FOR_EACH_DTYPE.
#define OXK_EMU_REDUCE(op, ty, E) \
  OXK_EMU_ENTRY(reduce_##op##_##ty, (E::S * d, const E::S* a, const E::S* b, size_t n), (d, a, b, n))
#define OXK_EMU_MULTI(op, ty)                                                                   \
  OXK_EMU_ENTRY(reduce_multi_##op##_##ty, (OxkMultiPtrs p, int nsrc, int ndst, size_t n, uint32_t avg), \
                (p, nsrc, ndst, n, avg))
#define OXK_EMU_REDUCER(ty, E)                                                             \
  OXK_EMU_REDUCE(sum, ty, E)                                                               \
  OXK_EMU_REDUCE(prod, ty, E)                                                              \
  OXK_EMU_REDUCE(min, ty, E)                                                               \
  OXK_EMU_REDUCE(max, ty, E)                                                               \
  OXK_EMU_MULTI(sum, ty)                                                                   \
  OXK_EMU_MULTI(prod, ty)                                                                  \
  OXK_EMU_MULTI(min, ty)                                                                   \
  OXK_EMU_MULTI(max, ty)                                                                   \
  OXK_EMU_ENTRY(avg_div_##ty, (E::S * d, size_t n, uint32_t world), (d, n, world))
OXK_FOR_EACH_DTYPE(OXK_EMU_REDUCER)
OXK_EMU_ENTRY(sig_write, (uint64_t * word, const uint64_t* epoch, uint64_t offset), (word, epoch, offset))
OXK_EMU_ENTRY(sig_wait,
              (const uint64_t* word, const uint64_t* epoch, uint64_t offset, uint64_t timeout_ns, uint64_t* fault,
               uint64_t code),
              (word, epoch, offset, timeout_ns, fault, code))
OXK_EMU_ENTRY(sig_advance, (uint64_t * epoch), (epoch))

// ---- self-tests of the emulator's own primitives (host only) ---------------
// Warp shuffles: one block of `threads` threads; thread i writes
// out[4i..4i+3] = {xor 1, xor 16, down 3, idx 5} of the value 1000·warp + lane.
static void oxk_selftest_shfl_kernel(unsigned* out) {
  unsigned t = threadIdx.x, v = 1000u * (t / 32) + t % 32;
  out[4 * t + 0] = __shfl_xor_sync(0xffffffffu, v, 1);
  out[4 * t + 1] = __shfl_xor_sync(0xffffffffu, v, 16);
  out[4 * t + 2] = (unsigned)__float_as_uint(__shfl_down_sync(0xffffffffu, __uint_as_float(v), 3u));
  out[4 * t + 3] = (unsigned)__float_as_uint(__shfl_sync(0xffffffffu, __uint_as_float(v), 5));
}
extern "C" int oxk_emu_selftest_shfl(unsigned threads, unsigned* out) {
  return ::oxk_emu::launch(dim3(1), dim3(threads), [=] { oxk_selftest_shfl_kernel(out); });
}

// Conversions: f16 → f32 for all 65536 patterns, f32 → f16 and f32 → bf16 of
// `n` given floats.
extern "C" void oxk_emu_selftest_convert(float* f16_to_f32, const float* in, uint16_t* to_f16, uint16_t* to_bf16,
                                         size_t n) {
  for (uint32_t h = 0; h < 65536; ++h) f16_to_f32[h] = oxk_f16_to_f32((uint16_t)h);
  for (size_t i = 0; i < n; ++i) {
    to_f16[i] = oxk_f32_to_f16(in[i]);
    to_bf16[i] = oxk_f32_to_bf16(in[i]);
  }
}
