// oxk.cuh — what every kernel file includes first. Under nvcc it brings
// the inline-PTX primitives (oxk_device.cuh); under g++ the emulation
// header (ptx/emu/emu.h) with host versions of the same functions, so one
// kernel source serves both.
//
// Storage types: f16 and bf16 travel as their 16-bit patterns (uint16_t);
// kernels convert with oxk_{f16,bf16}_to_f32 / oxk_f32_to_{f16,bf16}
// (round to nearest even).
#pragma once

#if defined(__CUDACC__)
#include <stdint.h>
#include "oxk_device.cuh"
#else
#include "../emu/emu.h"
#endif

#define OXK_INLINE __device__ __forceinline__

#if defined(__CUDACC__)
#define OXK_UNROLL _Pragma("unroll")
#else
#define OXK_UNROLL
#endif

// Grid-stride loop bounds in 64 bits (counts may exceed 2^31).
OXK_INLINE size_t oxk_global_thread() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
OXK_INLINE size_t oxk_grid_threads() { return (size_t)gridDim.x * blockDim.x; }

// True when every pointer is 16-byte aligned (vector loads are allowed).
OXK_INLINE bool oxk_aligned16(const void* a, const void* b = nullptr, const void* c = nullptr,
                              const void* d = nullptr) {
  return (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) & 15u) == 0;
}
