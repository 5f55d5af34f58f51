// reduce.cu — the collective reducer: dst[i] = a[i] ⊕ b[i] for
// ⊕ ∈ {sum, prod, min, max} and every oxccl dtype: f32, f64, f16, bf16, i8,
// u8, i32, u32, i64, u64 (40 kernels, named reduce_{op}_{dtype}). dst may
// equal a (in place); it must not partly overlap a or b. The direct step's
// reducer, reduce_multi_{op}_{dtype} (40 kernels): dst_j[i] = src_0[i] ⊕ ...
// ⊕ src_{m-1}[i] for up to OXK_MULTI sources and destinations in one pass
// (each element of every source read once, of every destination written
// once: the direct all-reduce's floor), combined in source order in the
// compute type (f32 for f16 and bf16, rounded once at the end; every other
// dtype in itself, so integers wrap at every step), then divided by `avg`
// when it is not 0 (avg's final step, fused); a destination may be a source
// (each element is read from every source before any destination is
// written). And avg's final step alone, d[i] = d[i] / world (10 kernels,
// avg_div_{dtype}): f32 and f64 divide in themselves, f16 and bf16 widen to
// f32, divide and round back to nearest even, integers truncate toward zero
// (exactly, also for a world the type cannot hold) — as the CPU's finalize.
//
// Semantics match the CPU reducer in collectives/src/reduce.rs: f16 and
// bf16 are widened to f32, combined, and rounded back to nearest even (for
// one operation this is the correctly rounded result); min/max are IEEE
// minNum/maxNum (fminf/fmaxf, fmin/fmax for f64: a NaN loses to a number);
// integer sum and prod wrap (two's complement) in the element's own width,
// integer min/max compare as signed or unsigned per the dtype.
//
// Launch: 1-D grid-stride, 256 threads per block (⌈n/V/256⌉ blocks,
// capped). Each iteration moves one 16-byte vector (V = 16 / element size:
// 16 i8/u8, 8 f16/bf16, 4 f32/i32/u32, 2 f64/i64/u64 elements) per operand
// when all three pointers are 16-byte aligned; a scalar loop finishes the
// last n mod V elements (or all of them when a pointer is misaligned).
// Traffic per element: 3 × element size (read a, b; write dst). Operations
// per element: 1 (plus 3 conversions for f16/bf16).
#include "../include/oxk.cuh"

// The unsigned type of an integer's width: wrapping arithmetic is done
// there (well defined) and converted back (two's complement).
template <class T>
struct OxkUnsigned;
template <>
struct OxkUnsigned<int8_t> {
  typedef uint8_t U;
};
template <>
struct OxkUnsigned<uint8_t> {
  typedef uint8_t U;
};
template <>
struct OxkUnsigned<int32_t> {
  typedef uint32_t U;
};
template <>
struct OxkUnsigned<uint32_t> {
  typedef uint32_t U;
};
template <>
struct OxkUnsigned<int64_t> {
  typedef uint64_t U;
};
template <>
struct OxkUnsigned<uint64_t> {
  typedef uint64_t U;
};

// a + b and a · b wrapped to T's width. The 8-bit operands promote to int,
// where neither overflows (255 · 255 < 2^31); the cast back wraps.
template <class T>
OXK_INLINE T oxk_wrap_add(T a, T b) {
  typedef typename OxkUnsigned<T>::U U;
  return (T)(U)((U)a + (U)b);
}
template <class T>
OXK_INLINE T oxk_wrap_mul(T a, T b) {
  typedef typename OxkUnsigned<T>::U U;
  return (T)(U)((U)a * (U)b);
}

// x / world truncating toward zero, exact for every world: signed types up
// to 32 bits divide in 32 bits (the quotient fits the type: |x / w| ≤ |x|
// for w ≥ 1), or in 64 when world does not fit an int32 (never for a real
// communicator; uniform across threads); i64 in 64 bits; unsigned types in
// their unsigned width (world, a uint32_t, fits u32 and u64; u8 divides in
// 32 bits).
OXK_INLINE int32_t oxk_div_trunc32(int32_t x, uint32_t w) {
  return w <= 0x7fffffffu ? x / (int32_t)w : (int32_t)((int64_t)x / (int64_t)w);
}

struct OxkF32 {
  typedef float S;
  typedef float C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
  OXK_INLINE static C div(C c, uint32_t w) { return c / (float)w; }
};
struct OxkF64 {
  typedef double S;
  typedef double C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
  OXK_INLINE static C div(C c, uint32_t w) { return c / (double)w; }
};
struct OxkF16 {
  typedef uint16_t S;
  typedef float C;
  OXK_INLINE static C load(S s) { return oxk_f16_to_f32(s); }
  OXK_INLINE static S store(C c) { return oxk_f32_to_f16(c); }
  OXK_INLINE static C div(C c, uint32_t w) { return c / (float)w; }
};
struct OxkBF16 {
  typedef uint16_t S;
  typedef float C;
  OXK_INLINE static C load(S s) { return oxk_bf16_to_f32(s); }
  OXK_INLINE static S store(C c) { return oxk_f32_to_bf16(c); }
  OXK_INLINE static C div(C c, uint32_t w) { return c / (float)w; }
};
struct OxkI8 {
  typedef int8_t S;
  typedef int8_t C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
  OXK_INLINE static C div(C c, uint32_t w) { return (C)oxk_div_trunc32(c, w); }
};
struct OxkU8 {
  typedef uint8_t S;
  typedef uint8_t C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
  OXK_INLINE static C div(C c, uint32_t w) { return (C)((uint32_t)c / w); }
};
struct OxkI32 {
  typedef int32_t S;
  typedef int32_t C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
  OXK_INLINE static C div(C c, uint32_t w) { return oxk_div_trunc32(c, w); }
};
struct OxkU32 {
  typedef uint32_t S;
  typedef uint32_t C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
  OXK_INLINE static C div(C c, uint32_t w) { return c / w; }
};
struct OxkI64 {
  typedef int64_t S;
  typedef int64_t C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
  OXK_INLINE static C div(C c, uint32_t w) { return c / (int64_t)w; }
};
struct OxkU64 {
  typedef uint64_t S;
  typedef uint64_t C;
  OXK_INLINE static C load(S s) { return s; }
  OXK_INLINE static S store(C c) { return c; }
  OXK_INLINE static C div(C c, uint32_t w) { return c / (uint64_t)w; }
};

// The operations on each compute type: float and double exactly as
// overloads, every integer type through the templates (an exact match,
// preferred over a conversion to float).
struct OxkSum {
  OXK_INLINE static float apply(float a, float b) { return a + b; }
  OXK_INLINE static double apply(double a, double b) { return a + b; }
  template <class T>
  OXK_INLINE static T apply(T a, T b) {
    return oxk_wrap_add(a, b);
  }
};
struct OxkProd {
  OXK_INLINE static float apply(float a, float b) { return a * b; }
  OXK_INLINE static double apply(double a, double b) { return a * b; }
  template <class T>
  OXK_INLINE static T apply(T a, T b) {
    return oxk_wrap_mul(a, b);
  }
};
struct OxkMin {
  OXK_INLINE static float apply(float a, float b) { return fminf(a, b); }
  OXK_INLINE static double apply(double a, double b) { return fmin(a, b); }
  template <class T>
  OXK_INLINE static T apply(T a, T b) {
    return a < b ? a : b;
  }
};
struct OxkMax {
  OXK_INLINE static float apply(float a, float b) { return fmaxf(a, b); }
  OXK_INLINE static double apply(double a, double b) { return fmax(a, b); }
  template <class T>
  OXK_INLINE static T apply(T a, T b) {
    return a > b ? a : b;
  }
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

#define OXK_FOR_EACH_DTYPE(X) \
  X(f32, OxkF32)               \
  X(f64, OxkF64)               \
  X(f16, OxkF16)               \
  X(bf16, OxkBF16)             \
  X(i8, OxkI8)                 \
  X(u8, OxkU8)                 \
  X(i32, OxkI32)               \
  X(u32, OxkU32)               \
  X(i64, OxkI64)               \
  X(u64, OxkU64)

OXK_FOR_EACH_DTYPE(OXK_REDUCE_ALL_OPS)

// avg's final step: d[i] = d[i] / world, in place, one element per thread
// and grid-stride step (the division dominates; no vectors needed).
template <class E>
OXK_INLINE void oxk_avg_div(typename E::S* d, size_t n, uint32_t world) {
  for (size_t k = oxk_global_thread(), stride = oxk_grid_threads(); k < n; k += stride) {
    d[k] = E::store(E::div(E::load(d[k]), world));
  }
}

#define OXK_AVG_KERNEL(ty, E)                                                                            \
  extern "C" __global__ void __launch_bounds__(256) avg_div_##ty(E::S* d, size_t n, uint32_t world) { \
    oxk_avg_div<E>(d, n, world);                                                                         \
  }

OXK_FOR_EACH_DTYPE(OXK_AVG_KERNEL)

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
  if (avg) acc = E::div(acc, avg);
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
      if (avg) acc[j] = E::div(acc[j], avg);
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

OXK_FOR_EACH_DTYPE(OXK_MULTI_ALL_OPS)
