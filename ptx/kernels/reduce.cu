// reduce.cu — the collective reducer: dst[i] = a[i] ⊕ b[i] for
// ⊕ ∈ {sum, prod, min, max} and f32, f16, bf16, i32 (16 kernels, named
// reduce_{op}_{dtype}). dst may equal a (in place); it must not partly
// overlap a or b. The direct step's reducer, reduce_multi_{op}_{dtype}
// (16 kernels): dst_j[i] = src_0[i] ⊕ ... ⊕ src_{m-1}[i] for up to
// OXK_MULTI sources and destinations in one pass (each element of every
// source read once, of every destination written once: the direct
// all-reduce's floor), combined in source order in the compute type (f32
// for f16 and bf16, rounded once at the end), then divided by `avg` when
// it is not 0 (avg's final step, fused); a destination may be a source
// (each element is read from every source before any destination is
// written). And avg's final step alone, d[i] = d[i] / world (4 kernels,
// avg_div_{dtype}): f32 divides in f32, f16 and bf16 widen to f32, divide
// and round back to nearest even, i32 truncates toward zero — as the CPU's
// finalize.
//
// Semantics match the CPU reducer in collectives/src/reduce.rs: f16 and
// bf16 are widened to f32, combined, and rounded back to nearest even (for
// one operation this is the correctly rounded result); min/max are IEEE
// minNum/maxNum (fminf/fmaxf: a NaN loses to a number); i32 sum and prod
// wrap (two's complement).
//
// Launch: 1-D grid-stride, 256 threads per block (⌈n/V/256⌉ blocks,
// capped). Each iteration moves one 16-byte vector (V = 4 f32/i32 or 8
// f16/bf16 elements) per operand when all three pointers are 16-byte
// aligned; a scalar loop finishes the last n mod V elements (or all of them
// when a pointer is misaligned). Traffic per element: 3 × element size
// (read a, b; write dst). FLOPs per element: 1 (plus 3 conversions for f16/bf16).
#include "../include/oxk.cuh"

struct OxkF32 {
  typedef float S;
  typedef float C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
};
struct OxkF16 {
  typedef uint16_t S;
  typedef float C;
  OXK_INLINE static C load(S s) { return oxk_f16_to_f32(s); }
  OXK_INLINE static S store(C c) { return oxk_f32_to_f16(c); }
};
struct OxkBF16 {
  typedef uint16_t S;
  typedef float C;
  OXK_INLINE static C load(S s) { return oxk_bf16_to_f32(s); }
  OXK_INLINE static S store(C c) { return oxk_f32_to_bf16(c); }
};
struct OxkI32 {
  typedef int32_t S;
  typedef int32_t C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
};

struct OxkSum {
  OXK_INLINE static float apply(float a, float b) { return a + b; }
  OXK_INLINE static int32_t apply(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
};
struct OxkProd {
  OXK_INLINE static float apply(float a, float b) { return a * b; }
  OXK_INLINE static int32_t apply(int32_t a, int32_t b) { return (int32_t)((uint32_t)a * (uint32_t)b); }
};
struct OxkMin {
  OXK_INLINE static float apply(float a, float b) { return fminf(a, b); }
  OXK_INLINE static int32_t apply(int32_t a, int32_t b) { return a < b ? a : b; }
};
struct OxkMax {
  OXK_INLINE static float apply(float a, float b) { return fmaxf(a, b); }
  OXK_INLINE static int32_t apply(int32_t a, int32_t b) { return a > b ? a : b; }
};

template <class E, class Op>
OXK_INLINE typename E::S oxk_reduce_one(typename E::S a, typename E::S b) {
  return E::store(Op::apply(E::load(a), E::load(b)));
}

template <class E, class Op>
OXK_INLINE void oxk_reduce(typename E::S* dst, const typename E::S* a, const typename E::S* b, size_t n) {
  typedef typename E::S S;
  constexpr int V = 16 / sizeof(S);
  union Vec {
    uint4 u;
    S s[V];
  };
  size_t i = oxk_global_thread(), stride = oxk_grid_threads(), nv = oxk_aligned16(dst, a, b) ? n / V : 0;
  for (size_t k = i; k < nv; k += stride) {
    Vec va, vb, vd;
    va.u = reinterpret_cast<const uint4*>(a)[k];
    vb.u = reinterpret_cast<const uint4*>(b)[k];
    OXK_UNROLL
    for (int j = 0; j < V; ++j) vd.s[j] = oxk_reduce_one<E, Op>(va.s[j], vb.s[j]);
    reinterpret_cast<uint4*>(dst)[k] = vd.u;
  }
  for (size_t e = nv * V + i; e < n; e += stride) dst[e] = oxk_reduce_one<E, Op>(a[e], b[e]);
}

#define OXK_REDUCE_KERNEL(op, Op, ty, E)                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                                   \
      reduce_##op##_##ty(E::S* dst, const E::S* a, const E::S* b, size_t n) {                        \
    oxk_reduce<E, Op>(dst, a, b, n);                                                                  \
  }

#define OXK_REDUCE_ALL_OPS(ty, E)       \
  OXK_REDUCE_KERNEL(sum, OxkSum, ty, E)   \
  OXK_REDUCE_KERNEL(prod, OxkProd, ty, E) \
  OXK_REDUCE_KERNEL(min, OxkMin, ty, E)   \
  OXK_REDUCE_KERNEL(max, OxkMax, ty, E)

OXK_REDUCE_ALL_OPS(f32, OxkF32)
OXK_REDUCE_ALL_OPS(f16, OxkF16)
OXK_REDUCE_ALL_OPS(bf16, OxkBF16)
OXK_REDUCE_ALL_OPS(i32, OxkI32)

// avg's final step: d[i] = d[i] / world, in place, one element per thread
// and grid-stride step (the division dominates; no vectors needed).
template <class E>
OXK_INLINE void oxk_avg_div(typename E::S* d, size_t n, uint32_t world) {
  for (size_t k = oxk_global_thread(), stride = oxk_grid_threads(); k < n; k += stride) {
    d[k] = E::store(E::load(d[k]) / (typename E::C)world);
  }
}

#define OXK_AVG_KERNEL(ty, E)                                                                            \
  extern "C" __global__ void __launch_bounds__(256) avg_div_##ty(E::S* d, size_t n, uint32_t world) { \
    oxk_avg_div<E>(d, n, world);                                                                         \
  }

OXK_AVG_KERNEL(f32, OxkF32)
OXK_AVG_KERNEL(f16, OxkF16)
OXK_AVG_KERNEL(bf16, OxkBF16)
OXK_AVG_KERNEL(i32, OxkI32)

// ---- the direct step's reducer: many sources, many destinations ----------

#define OXK_MULTI 8

// Sources and destinations, passed by value (a kernel parameter of 128 bytes).
struct OxkMultiPtrs {
  const void* src[OXK_MULTI];
  void* dst[OXK_MULTI];
};

template <class E, class Op>
OXK_INLINE typename E::S oxk_multi_one(const OxkMultiPtrs& p, int nsrc, size_t k, uint32_t avg) {
  typedef typename E::S S;
  typename E::C acc = E::load(static_cast<const S*>(p.src[0])[k]);
  OXK_UNROLL
  for (int s = 1; s < OXK_MULTI; ++s)
    if (s < nsrc) acc = Op::apply(acc, E::load(static_cast<const S*>(p.src[s])[k]));
  if (avg) acc = acc / (typename E::C)avg;
  return E::store(acc);
}

template <class E, class Op>
OXK_INLINE void oxk_reduce_multi(OxkMultiPtrs p, int nsrc, int ndst, size_t n, uint32_t avg) {
  typedef typename E::S S;
  constexpr int V = 16 / sizeof(S);
  union Vec {
    uint4 u;
    S s[V];
  };
  // Indices into the parameter's arrays are compile-time constants (the
  // loops unroll to OXK_MULTI, guarded by the counts), so the pointers are
  // read from the parameter space rather than copied to local memory.
  uintptr_t bits = 0;
  OXK_UNROLL
  for (int s = 0; s < OXK_MULTI; ++s)
    if (s < nsrc) bits |= (uintptr_t)p.src[s];
  OXK_UNROLL
  for (int d = 0; d < OXK_MULTI; ++d)
    if (d < ndst) bits |= (uintptr_t)p.dst[d];
  size_t i = oxk_global_thread(), stride = oxk_grid_threads(), nv = (bits & 15u) == 0 ? n / V : 0;
  for (size_t k = i; k < nv; k += stride) {
    typename E::C acc[V];
    Vec v;
    v.u = static_cast<const uint4*>(p.src[0])[k];
    OXK_UNROLL
    for (int j = 0; j < V; ++j) acc[j] = E::load(v.s[j]);
    OXK_UNROLL
    for (int s = 1; s < OXK_MULTI; ++s) {
      if (s >= nsrc) break;
      v.u = static_cast<const uint4*>(p.src[s])[k];
      OXK_UNROLL
      for (int j = 0; j < V; ++j) acc[j] = Op::apply(acc[j], E::load(v.s[j]));
    }
    OXK_UNROLL
    for (int j = 0; j < V; ++j) {
      if (avg) acc[j] = acc[j] / (typename E::C)avg;
      v.s[j] = E::store(acc[j]);
    }
    OXK_UNROLL
    for (int d = 0; d < OXK_MULTI; ++d)
      if (d < ndst) static_cast<uint4*>(p.dst[d])[k] = v.u;
  }
  for (size_t e = nv * V + i; e < n; e += stride) {
    S out = oxk_multi_one<E, Op>(p, nsrc, e, avg);
    OXK_UNROLL
    for (int d = 0; d < OXK_MULTI; ++d)
      if (d < ndst) static_cast<S*>(p.dst[d])[e] = out;
  }
}

#define OXK_MULTI_KERNEL(op, Op, ty, E)                                                                  \
  extern "C" __global__ void __launch_bounds__(256)                                                      \
      reduce_multi_##op##_##ty(OxkMultiPtrs p, int nsrc, int ndst, size_t n, uint32_t avg) {             \
    oxk_reduce_multi<E, Op>(p, nsrc, ndst, n, avg);                                                      \
  }

#define OXK_MULTI_ALL_OPS(ty, E)        \
  OXK_MULTI_KERNEL(sum, OxkSum, ty, E)   \
  OXK_MULTI_KERNEL(prod, OxkProd, ty, E) \
  OXK_MULTI_KERNEL(min, OxkMin, ty, E)   \
  OXK_MULTI_KERNEL(max, OxkMax, ty, E)

OXK_MULTI_ALL_OPS(f32, OxkF32)
OXK_MULTI_ALL_OPS(f16, OxkF16)
OXK_MULTI_ALL_OPS(bf16, OxkBF16)
OXK_MULTI_ALL_OPS(i32, OxkI32)
