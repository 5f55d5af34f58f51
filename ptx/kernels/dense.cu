// dense.cu — the dense layer's kernels, f32: GEMM with transposes and α/β,
// bias add, bias gradient, and the MSE loss with its gradient.
//
//   gemm_f32(A, B, C, M, N, K, trans_a, trans_b, alpha, beta):
//     C = α·op(A)·op(B) + β·C, all row-major and dense. op(A) is M×K: A is
//     M×K, or K×M when trans_a ≠ 0; op(B) is K×N: B is K×N, or N×K when
//     trans_b ≠ 0. β = 0 overwrites C without reading it (C may hold NaN).
//     K = 0 gives C = β·C (0 for β = 0).
//   bias_add_f32(Y, b, rows, cols):   Y[r,c] += b[c]
//   bias_grad_f32(dY, db, rows, cols): db[c] = Σ_r dY[r,c]  (0 for rows = 0)
//   mse_f32(P, T, dP, partial, n, scale):
//     dP[i] = 2·scale·(P[i] − T[i]); partial[blockIdx.x] = scale·Σ (P−T)²
//     over the block's elements. Every launched block writes its partial
//     (0 when it has no elements), so a launch of G blocks writes exactly
//     partial[0..G); the loss is their sum, added by the caller in index
//     order.
//
// gemm_f32 tiles as matmul_f32.cu: a 128×128 block of C per 256-thread
// block, k in steps of 8, next step's global loads in registers during the
// current step, shared tiles As[k][m] and Bs[k][n], an 8×8 sub-tile of C per
// thread (rows/columns 4·t+{0..3, 64..67}). Each operand is staged by one of
// two loader roles, chosen by its layout so that a warp's loads are
// contiguous: along k (A plain, B transposed: row tid/2, k 4·(tid%2)…+3) or
// along m/n (A transposed, B plain: k tid/32, m/n 4·(tid%32)…+3); float4
// loads when the contiguous extent is a multiple of 4 and the base 16-byte
// aligned, else scalar. Loads outside the operands are zero-filled; stores
// are bounds-checked, so M, N, K are arbitrary (the launcher skips M·N = 0).
//
// Launch: gemm_f32 grid (⌈N/128⌉, ⌈M/128⌉), block 256, 8 KiB static shared
// memory. bias_add_f32: 1-D grid-stride over rows·cols, 256 threads per
// block, any grid. bias_grad_f32: grid ⌈cols/32⌉, block 256 = 8 groups of 32
// columns-lanes. mse_f32: 1-D grid-stride, 256 threads per block, any grid
// (the launcher uses min(⌈n/256⌉, 1024), at least 1, blocks: that many
// partials).
//
// Precision and order, all f32 arithmetic:
//   gemm: f32 products, f32 accumulation in ascending k per element (fmaf),
//     then α·acc, then fmaf(β, C, α·acc) when β ≠ 0.
//   bias_add: one correctly rounded f32 addition per element.
//   bias_grad: per column, group g (0..7) sums rows g, g+8, g+16, … in
//     ascending order; the 8 group sums are then added in g order. The order
//     depends only on rows, not on the launch: deterministic, no atomics.
//   mse: dP two roundings (P−T, then ·(2·scale)); each thread accumulates
//     e² (fmaf) over its elements i, i+stride, … in ascending order, the block adds its 256
//     thread sums by a fixed shared-memory tree (halving, 128 → 1), and
//     multiplies by scale once. Deterministic for a given n and grid.
// FLOPs / traffic: gemm 2·M·N·K FLOPs (+ 3·M·N for α/β), minimum
// 4·(M·K + K·N + M·N) bytes (+ 4·M·N reading C when β ≠ 0); bias_add 1 FLOP,
// 8 bytes per element of Y (b is cached); bias_grad 1 FLOP and 4 bytes per
// element of dY; mse 5 FLOPs and 12 bytes (P, T read, dP written) per element.
#include "../include/oxk.cuh"

#define OXK_GEMM_BM 128
#define OXK_GEMM_BN 128
#define OXK_GEMM_BK 8

// One operand's 4 staged values for the k-step at k0. `along_k`: the
// operand's element (r, k) is at X[r·ld + k] (contiguous along k), else at
// X[k·ld + r] (contiguous along r). `rows` is its extent in r (M or N).
struct OxkGemmLoader {
  const float* X;
  int ld, rows, K;
  bool along_k, vec;
  int r, k;  // this thread's first (r, k) within the tile

  OXK_INLINE void fetch(int r0, int k0, float (&v)[4]) const {
    const int gr = r0 + r, gk = k0 + k;
    if (along_k) {
      if (vec && gr < rows && gk + 3 < K) {
        float4 t = *reinterpret_cast<const float4*>(X + (size_t)gr * ld + gk);
        v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
      } else {
        OXK_UNROLL
        for (int j = 0; j < 4; ++j) v[j] = (gr < rows && gk + j < K) ? X[(size_t)gr * ld + gk + j] : 0.f;
      }
    } else {
      if (vec && gk < K && gr + 3 < rows) {
        float4 t = *reinterpret_cast<const float4*>(X + (size_t)gk * ld + gr);
        v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
      } else {
        OXK_UNROLL
        for (int j = 0; j < 4; ++j) v[j] = (gk < K && gr + j < rows) ? X[(size_t)gk * ld + gr + j] : 0.f;
      }
    }
  }

  // Registers → the shared tile S[k][r].
  OXK_INLINE void stage(float (*S)[OXK_GEMM_BM], const float (&v)[4]) const {
    if (along_k) {
      OXK_UNROLL
      for (int j = 0; j < 4; ++j) S[k + j][r] = v[j];
    } else {
      *reinterpret_cast<float4*>(&S[k][r]) = make_float4(v[0], v[1], v[2], v[3]);
    }
  }
};

OXK_INLINE OxkGemmLoader oxk_gemm_loader(const float* X, int ld, int rows, int K, bool along_k) {
  const int tid = threadIdx.x;
  OxkGemmLoader l;
  l.X = X, l.ld = ld, l.rows = rows, l.K = K, l.along_k = along_k;
  l.vec = (ld % 4 == 0) && oxk_aligned16(X);
  if (along_k) {
    l.r = tid / 2, l.k = (tid % 2) * 4;
  } else {
    l.k = tid / 32, l.r = (tid % 32) * 4;
  }
  return l;
}

extern "C" __global__ void __launch_bounds__(256)
    gemm_f32(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K,
             int trans_a, int trans_b, float alpha, float beta) {
  __shared__ __align__(16) float As[OXK_GEMM_BK][OXK_GEMM_BM];
  __shared__ __align__(16) float Bs[OXK_GEMM_BK][OXK_GEMM_BN];

  const int tid = threadIdx.x;
  const int m0 = blockIdx.y * OXK_GEMM_BM, n0 = blockIdx.x * OXK_GEMM_BN;
  // A plain: (m, k) at A[m·K + k]; transposed: at A[k·M + m].
  // B plain: (k, n) at B[k·N + n]; transposed: at B[n·K + k].
  const OxkGemmLoader la = oxk_gemm_loader(A, trans_a ? M : K, M, K, !trans_a);
  const OxkGemmLoader lb = oxk_gemm_loader(B, trans_b ? K : N, N, K, trans_b != 0);
  const int ty = tid / 16, tx = tid % 16;

  float acc[8][8];
  OXK_UNROLL
  for (int i = 0; i < 8; ++i) {
    OXK_UNROLL
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;
  }

  float a_reg[4], b_reg[4];
  la.fetch(m0, 0, a_reg);
  lb.fetch(n0, 0, b_reg);
  for (int k0 = 0; k0 < K; k0 += OXK_GEMM_BK) {
    la.stage(As, a_reg);
    lb.stage(Bs, b_reg);
    __syncthreads();
    if (k0 + OXK_GEMM_BK < K) {
      la.fetch(m0, k0 + OXK_GEMM_BK, a_reg);
      lb.fetch(n0, k0 + OXK_GEMM_BK, b_reg);
    }

    OXK_UNROLL
    for (int k = 0; k < OXK_GEMM_BK; ++k) {
      float a[8], b[8];
      float4 a0 = *reinterpret_cast<const float4*>(&As[k][ty * 4]);
      float4 a1 = *reinterpret_cast<const float4*>(&As[k][64 + ty * 4]);
      float4 b0 = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
      float4 b1 = *reinterpret_cast<const float4*>(&Bs[k][64 + tx * 4]);
      a[0] = a0.x, a[1] = a0.y, a[2] = a0.z, a[3] = a0.w, a[4] = a1.x, a[5] = a1.y, a[6] = a1.z, a[7] = a1.w;
      b[0] = b0.x, b[1] = b0.y, b[2] = b0.z, b[3] = b0.w, b[4] = b1.x, b[5] = b1.y, b[6] = b1.z, b[7] = b1.w;
      OXK_UNROLL
      for (int i = 0; i < 8; ++i) {
        OXK_UNROLL
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }

  const bool read_c = beta != 0.f;
  OXK_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int gm = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
    if (gm >= M) continue;
    OXK_UNROLL
    for (int j = 0; j < 8; ++j) {
      const int gn = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
      if (gn >= N) continue;
      float* c = C + (size_t)gm * N + gn;
      const float v = alpha * acc[i][j];
      *c = read_c ? fmaf(beta, *c, v) : v;
    }
  }
}

extern "C" __global__ void __launch_bounds__(256)
    bias_add_f32(float* __restrict__ Y, const float* __restrict__ b, size_t rows, size_t cols) {
  const size_t n = rows * cols;
  for (size_t i = oxk_global_thread(); i < n; i += oxk_grid_threads()) Y[i] += b[i % cols];
}

#define OXK_BGRAD_GROUPS 8

extern "C" __global__ void __launch_bounds__(256)
    bias_grad_f32(const float* __restrict__ dY, float* __restrict__ db, size_t rows, size_t cols) {
  __shared__ float part[OXK_BGRAD_GROUPS][32];
  const int lane = threadIdx.x % 32, g = threadIdx.x / 32;
  const size_t c = (size_t)blockIdx.x * 32 + lane;
  float s = 0.f;
  if (c < cols) {
    for (size_t r = g; r < rows; r += OXK_BGRAD_GROUPS) s += dY[r * cols + c];
  }
  part[g][lane] = s;
  __syncthreads();
  if (g == 0 && c < cols) {
    float t = part[0][lane];
    OXK_UNROLL
    for (int k = 1; k < OXK_BGRAD_GROUPS; ++k) t += part[k][lane];
    db[c] = t;
  }
}

extern "C" __global__ void __launch_bounds__(256)
    mse_f32(const float* __restrict__ P, const float* __restrict__ T, float* __restrict__ dP,
            float* __restrict__ partial, size_t n, float scale) {
  __shared__ float sums[256];
  const float two_s = 2.f * scale;
  float s = 0.f;
  for (size_t i = oxk_global_thread(); i < n; i += oxk_grid_threads()) {
    const float e = P[i] - T[i];
    dP[i] = two_s * e;
    s = fmaf(e, e, s);
  }
  sums[threadIdx.x] = s;
  __syncthreads();
  for (unsigned h = blockDim.x / 2; h > 0; h /= 2) {
    if (threadIdx.x < h) sums[threadIdx.x] += sums[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = scale * sums[0];
}
