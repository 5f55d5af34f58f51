// adam.cu — fused AdamW step, f32 parameters, gradients and moments.
//
//   adam_f32(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
//     m = β1·m + (1−β1)·g
//     v = β2·v + (1−β2)·g²
//     p = p − lr·( (m/bc1) / (√(v/bc2) + eps) + weight_decay·p )
//   with the bias corrections bc1 = 1 − β1^t, bc2 = 1 − β2^t computed once
//   on the host for step t ≥ 1. Weight decay is decoupled (AdamW, as
//   llm.c); weight_decay = 0 gives plain Adam.
//
// Launch: 1-D grid-stride, 256 threads per block (⌈n/4/256⌉ blocks,
// capped); float4 loads and stores when all four arrays are 16-byte aligned,
// scalar for the last n mod 4 elements. Precision: f32 throughout, IEEE
// division and square root. Traffic per element: 28 bytes (read p g m v,
// write p m v). FLOPs per element: ≈ 14 plus one sqrt and one division.
#include "../include/oxk.cuh"

struct OxkAdamArgs {
  float lr, beta1, beta2, eps, weight_decay, bc1, bc2;
};

OXK_INLINE void oxk_adam_one(float& p, float g, float& m, float& v, const OxkAdamArgs& a) {
  m = a.beta1 * m + (1.f - a.beta1) * g;
  v = a.beta2 * v + (1.f - a.beta2) * g * g;
  float mhat = m / a.bc1, vhat = v / a.bc2;
  p = p - a.lr * (mhat / (sqrtf(vhat) + a.eps) + a.weight_decay * p);
}

extern "C" __global__ void __launch_bounds__(256)
    adam_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
             size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2) {
  OxkAdamArgs a{lr, beta1, beta2, eps, weight_decay, bc1, bc2};
  size_t i = oxk_global_thread(), stride = oxk_grid_threads(), nv = oxk_aligned16(p, g, m, v) ? n / 4 : 0;
  for (size_t k = i; k < nv; k += stride) {
    float4 P = reinterpret_cast<float4*>(p)[k], G = reinterpret_cast<const float4*>(g)[k];
    float4 M = reinterpret_cast<float4*>(m)[k], V = reinterpret_cast<float4*>(v)[k];
    oxk_adam_one(P.x, G.x, M.x, V.x, a);
    oxk_adam_one(P.y, G.y, M.y, V.y, a);
    oxk_adam_one(P.z, G.z, M.z, V.z, a);
    oxk_adam_one(P.w, G.w, M.w, V.w, a);
    reinterpret_cast<float4*>(p)[k] = P;
    reinterpret_cast<float4*>(m)[k] = M;
    reinterpret_cast<float4*>(v)[k] = V;
  }
  for (size_t e = nv * 4 + i; e < n; e += stride) oxk_adam_one(p[e], g[e], m[e], v[e], a);
}
