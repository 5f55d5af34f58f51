// matmul_bf16.cu — C = A·B on the tensor cores: bf16 operands, f32
// accumulation and f32 output (sm_80+).
//
//   matmul_bf16(A, B, C, M, N, K): A is M×K bf16, B is K×N bf16, C is M×N
//   f32, all row-major and dense.
//
// Tiling: a 128×128 block of C per 256-thread block (8 warps as 2×4, each
// warp a 64×32 tile = 4×4 mma tiles of 16×8), k in steps of 32, two shared-
// memory stages so the copy of step k+1 overlaps the mma of step k.
// Staging: when K and N are multiples of 8 and A, B are 16-byte aligned,
// cp.async.cg moves 16-byte chunks (zero-filled past the edges of A and B);
// otherwise plain bounds-checked loads fill the same tiles. Shared rows are
// padded by 8 elements (80- and 272-byte strides) so ldmatrix's eight row
// addresses fall in distinct banks. Fragments: A via ldmatrix.x4 (row-major
// 16×16), B via ldmatrix.x4.trans (two 16×8 column fragments per call from
// the k-major tile), then mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32.
// Layouts are the PTX ISA's; ptx/emu/emu_warp.h spells them out.
//
// Launch: grid (⌈N/128⌉, ⌈M/128⌉), block 256, 37 888 bytes static shared
// memory; __launch_bounds__(256, 2) caps registers at 128 so two blocks
// share an SM (ptxas then spills one 4-byte value). Precision: exact bf16 products, f32 accumulation (order within an
// mma is the hardware's). FLOPs: 2·M·N·K. Minimum traffic:
// 2·(M·K + K·N) + 4·M·N bytes.
#include "../include/oxk.cuh"

#define OXK_MMB_BM 128
#define OXK_MMB_BN 128
#define OXK_MMB_BK 32
#define OXK_MMB_APAD (OXK_MMB_BK + 8)
#define OXK_MMB_BPAD (OXK_MMB_BN + 8)

// Fills stage tiles As[BM][APAD], Bs[BK][BPAD] for the k-step at k0.
OXK_INLINE void oxk_mmb_stage(uint16_t (*As)[OXK_MMB_APAD], uint16_t (*Bs)[OXK_MMB_BPAD], const uint16_t* A,
                              const uint16_t* B, int M, int N, int K, int m0, int n0, int k0, bool async) {
  const int tid = threadIdx.x;
  // A: 128 rows × 4 chunks of 8; B: 32 rows × 16 chunks of 8. Two of each per thread.
  OXK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int c = tid + r * 256;
    const int ar = c / 4, ak = (c % 4) * 8;
    const int br = c / 16, bn = (c % 16) * 8;
    const int gm = m0 + ar, gka = k0 + ak, gkb = k0 + br, gn = n0 + bn;
    if (async) {
      const bool a_in = gm < M && gka < K, b_in = gkb < K && gn < N;
      oxk_cp_async_16(&As[ar][ak], a_in ? A + (size_t)gm * K + gka : A, a_in ? 16 : 0);
      oxk_cp_async_16(&Bs[br][bn], b_in ? B + (size_t)gkb * N + gn : B, b_in ? 16 : 0);
    } else {
      OXK_UNROLL
      for (int j = 0; j < 8; ++j) {
        As[ar][ak + j] = (gm < M && gka + j < K) ? A[(size_t)gm * K + gka + j] : (uint16_t)0;
        Bs[br][bn + j] = (gkb < K && gn + j < N) ? B[(size_t)gkb * N + gn + j] : (uint16_t)0;
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(256, 2)
    matmul_bf16(const uint16_t* __restrict__ A, const uint16_t* __restrict__ B, float* __restrict__ C, int M, int N,
                int K) {
  __shared__ __align__(16) uint16_t As[2][OXK_MMB_BM][OXK_MMB_APAD];
  __shared__ __align__(16) uint16_t Bs[2][OXK_MMB_BK][OXK_MMB_BPAD];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / 4, wn = warp % 4;  // warp tile at rows 64·wm, columns 32·wn
  const int m0 = blockIdx.y * OXK_MMB_BM, n0 = blockIdx.x * OXK_MMB_BN;
  const bool async = (K % 8 == 0) && (N % 8 == 0) && oxk_aligned16(A, B);
  const int ktiles = (K + OXK_MMB_BK - 1) / OXK_MMB_BK;

  float acc[4][4][4];
  OXK_UNROLL
  for (int i = 0; i < 4; ++i) {
    OXK_UNROLL
    for (int j = 0; j < 4; ++j) {
      OXK_UNROLL
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;
    }
  }

  oxk_mmb_stage(As[0], Bs[0], A, B, M, N, K, m0, n0, 0, async);
  oxk_cp_async_commit();

  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt & 1;
    if (kt + 1 < ktiles) {
      oxk_mmb_stage(As[s ^ 1], Bs[s ^ 1], A, B, M, N, K, m0, n0, (kt + 1) * OXK_MMB_BK, async);
      oxk_cp_async_commit();
      oxk_cp_async_wait<1>();  // stage s has landed; stage s^1 may still be in flight
    } else {
      oxk_cp_async_wait<0>();
    }
    __syncthreads();

    OXK_UNROLL
    for (int kk = 0; kk < OXK_MMB_BK; kk += 16) {
      uint32_t a[4][4];
      OXK_UNROLL
      for (int i = 0; i < 4; ++i) {
        // Lanes 0–15 address rows 0–15 at k kk, lanes 16–31 the same rows at k kk+8.
        oxk_ldmatrix_x4(a[i], &As[s][wm * 64 + i * 16 + lane % 16][kk + (lane / 16) * 8]);
      }
      OXK_UNROLL
      for (int p = 0; p < 2; ++p) {
        // Matrices: (k 0–7, n 0–7), (k 8–15, n 0–7), (k 0–7, n 8–15), (k 8–15, n 8–15):
        // registers {0, 1} are the B fragment of n-tile 2p, {2, 3} that of n-tile 2p+1.
        uint32_t b[4];
        oxk_ldmatrix_x4_trans(b, &Bs[s][kk + lane % 8 + ((lane / 8) % 2) * 8][wn * 32 + p * 16 + (lane / 16) * 8]);
        OXK_UNROLL
        for (int i = 0; i < 4; ++i) {
          oxk_mma_bf16_16816(acc[i][2 * p], a[i], &b[0], acc[i][2 * p]);
          oxk_mma_bf16_16816(acc[i][2 * p + 1], a[i], &b[2], acc[i][2 * p + 1]);
        }
      }
    }
    __syncthreads();
  }

  // c0,c1: row g, columns 2t, 2t+1; c2,c3: row g+8.
  const int g = lane / 4, t = lane % 4;
  OXK_UNROLL
  for (int i = 0; i < 4; ++i) {
    OXK_UNROLL
    for (int j = 0; j < 4; ++j) {
      OXK_UNROLL
      for (int r = 0; r < 4; ++r) {
        const int gm = m0 + wm * 64 + i * 16 + g + (r >= 2 ? 8 : 0);
        const int gn = n0 + wn * 32 + j * 8 + 2 * t + (r & 1);
        if (gm < M && gn < N) C[(size_t)gm * N + gn] = acc[i][j][r];
      }
    }
  }
}
