// activation.cu — ReLU and GELU (tanh form), forward and backward, f32.
//
//   relu_fwd_f32(x, y, n):      y = max(x, 0)
//   relu_bwd_f32(x, dy, dx, n): dx = x > 0 ? dy : 0
//   gelu_fwd_f32(x, y, n):      y = ½·x·(1 + tanh(u)),  u = √(2/π)·(x + 0.044715·x³)
//   gelu_bwd_f32(x, dy, dx, n): dx = dy · dy/dx of the above
//
// GELU is evaluated as x·σ(2u) = x / (1 + e^(−2u)), the same function
// (1 + tanh u = 2σ(2u)) without the cancellation of 1 + tanh u for x ≪ 0;
// its derivative is s + x·s·(1−s)·2u′ with s = σ(2u),
// u′ = √(2/π)·(1 + 3·0.044715·x²).
//
// Launch: 1-D grid-stride, 256 threads per block, any grid (the launcher
// uses ⌈n/4/256⌉ blocks, capped). When every pointer is 16-byte aligned each
// thread moves float4s and a scalar loop finishes the last n mod 4 elements.
// Precision: f32 in and out, f32 arithmetic with full-precision expf.
// Traffic per element: fwd 8 bytes (read x, write y), bwd 12 bytes (x, dy,
// dx). FLOPs per element: relu 1; gelu fwd ≈ 8 + expf; gelu bwd ≈ 14 + expf.
#include "../include/oxk.cuh"

struct OxkRelu {
  OXK_INLINE static float fwd(float x) { return x > 0.f ? x : 0.f; }
  OXK_INLINE static float bwd(float x, float dy) { return x > 0.f ? dy : 0.f; }
};

struct OxkGelu {
  static constexpr float kC = 0.7978845608028654f;  // √(2/π)
  static constexpr float kA = 0.044715f;
  OXK_INLINE static float sig2u(float x) {
    float u = kC * (x + kA * x * x * x);
    return 1.f / (1.f + expf(-2.f * u));
  }
  OXK_INLINE static float fwd(float x) { return x * sig2u(x); }
  OXK_INLINE static float bwd(float x, float dy) {
    float s = sig2u(x);
    float du = kC * (1.f + 3.f * kA * x * x);
    return dy * (s + x * s * (1.f - s) * 2.f * du);
  }
};

template <class Op>
OXK_INLINE void oxk_act_fwd(const float* __restrict__ x, float* __restrict__ y, size_t n) {
  size_t i = oxk_global_thread(), stride = oxk_grid_threads(), nv = oxk_aligned16(x, y) ? n / 4 : 0;
  for (size_t v = i; v < nv; v += stride) {
    float4 a = reinterpret_cast<const float4*>(x)[v];
    reinterpret_cast<float4*>(y)[v] = make_float4(Op::fwd(a.x), Op::fwd(a.y), Op::fwd(a.z), Op::fwd(a.w));
  }
  for (size_t e = nv * 4 + i; e < n; e += stride) y[e] = Op::fwd(x[e]);
}

template <class Op>
OXK_INLINE void oxk_act_bwd(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                            size_t n) {
  size_t i = oxk_global_thread(), stride = oxk_grid_threads(), nv = oxk_aligned16(x, dy, dx) ? n / 4 : 0;
  for (size_t v = i; v < nv; v += stride) {
    float4 a = reinterpret_cast<const float4*>(x)[v];
    float4 g = reinterpret_cast<const float4*>(dy)[v];
    reinterpret_cast<float4*>(dx)[v] =
        make_float4(Op::bwd(a.x, g.x), Op::bwd(a.y, g.y), Op::bwd(a.z, g.z), Op::bwd(a.w, g.w));
  }
  for (size_t e = nv * 4 + i; e < n; e += stride) dx[e] = Op::bwd(x[e], dy[e]);
}

extern "C" __global__ void __launch_bounds__(256) relu_fwd_f32(const float* x, float* y, size_t n) {
  oxk_act_fwd<OxkRelu>(x, y, n);
}
extern "C" __global__ void __launch_bounds__(256) relu_bwd_f32(const float* x, const float* dy, float* dx, size_t n) {
  oxk_act_bwd<OxkRelu>(x, dy, dx, n);
}
extern "C" __global__ void __launch_bounds__(256) gelu_fwd_f32(const float* x, float* y, size_t n) {
  oxk_act_fwd<OxkGelu>(x, y, n);
}
extern "C" __global__ void __launch_bounds__(256) gelu_bwd_f32(const float* x, const float* dy, float* dx, size_t n) {
  oxk_act_bwd<OxkGelu>(x, dy, dx, n);
}
