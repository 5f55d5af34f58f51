// matmul_f32.cu — C = A·B in f32 on the SIMT cores (no tensor cores).
//
//   matmul_f32(A, B, C, M, N, K): A is M×K, B is K×N, C is M×N, all
//   row-major and dense (leading dimensions K, N, N).
//
// Tiling: a 128×128 block of C per 256-thread block, k in steps of 8.
// The next step's global loads go to registers while the current step is
// computed. Each step the block stages an 8-wide slice of A (stored transposed,
// As[k][m], so a thread's 8 rows are two float4 reads) and of B (Bs[k][n])
// in shared memory; each thread then accumulates an 8×8 sub-tile of C in
// registers: rows 4·(tid/16)+{0..3, 64..67}, columns 4·(tid%16)+{0..3,
// 64..67} (split in two so a warp's float4 reads of shared memory do not
// conflict on banks). Loads outside A or
// B are zero-filled, so M, N, K need not be multiples of anything; global
// loads use float4 when the row length is a multiple of 4 and the base is
// 16-byte aligned, else scalar loads. Stores are bounds-checked.
//
// Launch: grid (⌈N/128⌉, ⌈M/128⌉), block 256, 8 KiB static shared memory.
// Precision: f32 products and f32 accumulation in k order (ascending k) per
// element. FLOPs: 2·M·N·K. Minimum traffic: 4·(M·K + K·N + M·N) bytes.
#include "../include/oxk.cuh"

#define OXK_MMF_BM 128
#define OXK_MMF_BN 128
#define OXK_MMF_BK 8

extern "C" __global__ void __launch_bounds__(256)
    matmul_f32(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
  __shared__ __align__(16) float As[OXK_MMF_BK][OXK_MMF_BM];
  __shared__ __align__(16) float Bs[OXK_MMF_BK][OXK_MMF_BN];

  const int tid = threadIdx.x;
  const int m0 = blockIdx.y * OXK_MMF_BM, n0 = blockIdx.x * OXK_MMF_BN;
  const bool a_vec = (K % 4 == 0) && oxk_aligned16(A);
  const bool b_vec = (N % 4 == 0) && oxk_aligned16(B);
  // Loader roles: A — row tid/2, k 4·(tid%2)…+3; B — k tid/32, n 4·(tid%32)…+3.
  const int a_row = tid / 2, a_k = (tid % 2) * 4;
  const int b_k = tid / 32, b_n = (tid % 32) * 4;
  // Compute role: an 8×8 sub-tile, rows/columns r(i) = 4·t + i (i < 4), 64 + 4·t + i − 4.
  const int ty = tid / 16, tx = tid % 16;

  float acc[8][8];
  OXK_UNROLL
  for (int i = 0; i < 8; ++i) {
    OXK_UNROLL
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;
  }

  // Global → registers for the k-step at k0 (zero outside A and B).
  float a_reg[4];
  float4 b_reg;
  auto fetch = [&](int k0) {
    const int gm = m0 + a_row, gk = k0 + a_k;
    if (a_vec && gm < M && gk + 3 < K) {
      float4 t = *reinterpret_cast<const float4*>(A + (size_t)gm * K + gk);
      a_reg[0] = t.x, a_reg[1] = t.y, a_reg[2] = t.z, a_reg[3] = t.w;
    } else {
      OXK_UNROLL
      for (int j = 0; j < 4; ++j) a_reg[j] = (gm < M && gk + j < K) ? A[(size_t)gm * K + gk + j] : 0.f;
    }
    const int bk = k0 + b_k, gn = n0 + b_n;
    if (b_vec && bk < K && gn + 3 < N) {
      b_reg = *reinterpret_cast<const float4*>(B + (size_t)bk * N + gn);
    } else {
      float v[4];
      OXK_UNROLL
      for (int j = 0; j < 4; ++j) v[j] = (bk < K && gn + j < N) ? B[(size_t)bk * N + gn + j] : 0.f;
      b_reg = make_float4(v[0], v[1], v[2], v[3]);
    }
  };

  fetch(0);
  for (int k0 = 0; k0 < K; k0 += OXK_MMF_BK) {
    // Registers → shared (A transposed), then start fetching the next step
    // so its global loads are in flight during this step's arithmetic.
    OXK_UNROLL
    for (int j = 0; j < 4; ++j) As[a_k + j][a_row] = a_reg[j];
    *reinterpret_cast<float4*>(&Bs[b_k][b_n]) = b_reg;
    __syncthreads();
    if (k0 + OXK_MMF_BK < K) fetch(k0 + OXK_MMF_BK);

    OXK_UNROLL
    for (int k = 0; k < OXK_MMF_BK; ++k) {
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

  OXK_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int gm = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
    if (gm >= M) continue;
    OXK_UNROLL
    for (int j = 0; j < 8; ++j) {
      const int gn = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
      if (gn < N) C[(size_t)gm * N + gn] = acc[i][j];
    }
  }
}
