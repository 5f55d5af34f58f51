// emu.h — run CUDA kernel sources on the host (the old `-deviceemu` idea).
//
// Included instead of the CUDA headers when a kernel file is compiled by g++
// (see ptx/include/oxk.cuh). The model:
//   * a launch runs the grid's blocks one at a time, in order x, y, z;
//   * a block's threads are real host threads (one per CUDA thread, kept in
//     a pool and reused from block to block and launch to launch); `__syncthreads()` is a real
//     barrier over the block's live threads, and a thread that returns early
//     drops out of it, as on the GPU;
//   * `__shared__` variables become function statics: one copy, shared by
//     the block's threads and reused by the next block. Launches are
//     serialised by a process-wide lock, so two launches never share them;
//   * warp-level operations (shuffles, ldmatrix, mma.sync) gather the 32
//     lanes' operands at a per-warp barrier and give each lane exactly the
//     values the PTX ISA's fragment layouts say it holds (see emu_warp.h);
//   * cp.async copies are queued per thread and performed only by
//     cp.async.wait_group, so a kernel that reads shared memory without
//     waiting reads stale data here as it may on the GPU.
// A barrier that waits longer than OXK_EMU_TIMEOUT seconds (default 120)
// aborts the process with a message naming the kernel's block and thread:
// a divergent __syncthreads is a loud failure, never a hang.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include <functional>

// ---- CUDA keywords --------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

// ---- CUDA vector and index types ------------------------------------------
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }

namespace oxk_emu {

extern thread_local uint3 tl_thread_idx;
extern thread_local uint3 tl_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

// Block-wide barrier (`__syncthreads`).
void syncthreads();
// Warp-wide barrier (`__syncwarp`); every warp operation below uses it.
void syncwarp();
// This thread's lane (0..31) and the number of live lanes in its warp slot.
unsigned lane_id();
// Per-warp exchange area: 32 lanes × 16 words, valid between syncwarp()s.
uint64_t* warp_slots();

// Warp shuffles on 32-bit values (the full-warp mask is the only one used).
uint32_t shfl_xor_u32(uint32_t v, int lane_mask);
uint32_t shfl_down_u32(uint32_t v, unsigned delta);
uint32_t shfl_idx_u32(uint32_t v, int src_lane);

// cp.async: queue a copy of `src_bytes` (≤ 16) bytes, zero-filling to 16.
void cp_async_16(void* smem, const void* gmem, int src_bytes);
void cp_async_commit();
void cp_async_wait(int newest_pending);

// Prints `what` with the calling thread's block and thread, and aborts.
[[noreturn]] void fail(const char* what);

// Runs `body` for every thread of every block. Returns 0, or a nonzero code
// for an invalid launch shape (1: zero-sized grid or block, 2: more than
// 1024 threads per block).
int launch(dim3 grid, dim3 block, const std::function<void()>& body);

}  // namespace oxk_emu

#define threadIdx (::oxk_emu::tl_thread_idx)
#define blockIdx (::oxk_emu::tl_block_idx)
#define blockDim (::oxk_emu::g_block_dim)
#define gridDim (::oxk_emu::g_grid_dim)

inline void __syncthreads() { ::oxk_emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::oxk_emu::syncwarp(); }

inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}

inline float __shfl_xor_sync(unsigned, float v, int m) {
  return __uint_as_float(::oxk_emu::shfl_xor_u32(__float_as_uint(v), m));
}
inline int __shfl_xor_sync(unsigned, int v, int m) { return (int)::oxk_emu::shfl_xor_u32((uint32_t)v, m); }
inline unsigned __shfl_xor_sync(unsigned, unsigned v, int m) { return ::oxk_emu::shfl_xor_u32(v, m); }
inline float __shfl_down_sync(unsigned, float v, unsigned d) {
  return __uint_as_float(::oxk_emu::shfl_down_u32(__float_as_uint(v), d));
}
inline float __shfl_sync(unsigned, float v, int src) {
  return __uint_as_float(::oxk_emu::shfl_idx_u32(__float_as_uint(v), src));
}

#include "emu_warp.h"
