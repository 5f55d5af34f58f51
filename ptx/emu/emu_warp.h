// emu_warp.h — host versions of the warp-level and conversion primitives
// that ptx/include/oxk_device.cuh implements with inline PTX. Each follows
// the PTX ISA ("Warp-level matrix fragments for mma.m16n8k16", "ldmatrix",
// "cp.async", "cvt") so a kernel that uses a fragment wrongly on the GPU
// computes the wrong answer here too.
//
// Fragment words: a .b32 register holding two 16-bit elements keeps the
// lower-indexed element in bits 0..15.
#pragma once

// ---- conversions (round to nearest even, as cvt.rn) ------------------------
inline float oxk_bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

inline uint16_t oxk_f32_to_bf16(float f) {
  uint32_t x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

inline float oxk_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    float v = (float)m * 5.9604644775390625e-8f;  // m · 2^-24, exact
    return sign ? -v : v;
  }
  if (e == 31) return __uint_as_float(sign | 0x7f800000u | (m << 13));
  return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

inline uint16_t oxk_f32_to_f16(float f) {
  uint32_t x = __float_as_uint(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((ax >> 13) & 0x3ffu);  // NaN
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // ≥ 65520 rounds to infinity
  if (ax >= 0x38800000u) {                       // normal: ≥ 2^-14
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
  }
  // subnormal or zero: the result's mantissa is |f| · 2^24 rounded to even.
  float scaled = __uint_as_float(ax) * 16777216.0f;  // exact
  return sign | (uint16_t)nearbyintf(scaled);
}

inline uint32_t oxk_pack_bf16x2(float lo, float hi) {
  return (uint32_t)oxk_f32_to_bf16(lo) | ((uint32_t)oxk_f32_to_bf16(hi) << 16);
}

// ---- cp.async ---------------------------------------------------------------
inline void oxk_cp_async_16(void* smem, const void* gmem, int src_bytes) {
  ::oxk_emu::cp_async_16(smem, gmem, src_bytes);
}
inline void oxk_cp_async_commit() { ::oxk_emu::cp_async_commit(); }
template <int N>
inline void oxk_cp_async_wait() {
  ::oxk_emu::cp_async_wait(N);
}

// ---- ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 ------------------------
// Lanes 8j..8j+7 give the addresses of rows 0..7 of matrix j (16 bytes each).
// Without .trans lane l receives, in register j, row l/4, columns 2(l%4) and
// 2(l%4)+1 of matrix j; with .trans it receives rows 2(l%4) and 2(l%4)+1 of
// column l/4 (the fragment of the transposed matrix).
inline void oxk_ldmatrix_x4_impl(uint32_t r[4], const void* row, bool trans) {
  uint64_t* slots = ::oxk_emu::warp_slots();
  unsigned lane = ::oxk_emu::lane_id();
  if ((uintptr_t)row % 16 != 0) ::oxk_emu::fail("ldmatrix: a row address is not 16-byte aligned");
  slots[lane * 16] = (uint64_t)(uintptr_t)row;
  ::oxk_emu::syncwarp();
  for (unsigned j = 0; j < 4; ++j) {
    uint16_t e[2];
    for (unsigned i = 0; i < 2; ++i) {
      unsigned rr = trans ? 2 * (lane % 4) + i : lane / 4;
      unsigned cc = trans ? lane / 4 : 2 * (lane % 4) + i;
      const uint16_t* p = (const uint16_t*)(uintptr_t)slots[(8 * j + rr) * 16];
      e[i] = p[cc];
    }
    r[j] = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
  }
  ::oxk_emu::syncwarp();
}
inline void oxk_ldmatrix_x4(uint32_t r[4], const void* row) { oxk_ldmatrix_x4_impl(r, row, false); }
inline void oxk_ldmatrix_x4_trans(uint32_t r[4], const void* row) { oxk_ldmatrix_x4_impl(r, row, true); }

// ---- mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 ----------------------
// With g = lane/4 and t = lane%4 (PTX ISA, m16n8k16 fragments):
//   A (16×16): a0:(g, 2t..2t+1) a1:(g+8, 2t..) a2:(g, 2t+8..) a3:(g+8, 2t+8..)
//   B (16×8):  b0:(k 2t..2t+1, n g) b1:(k 2t+8..2t+9, n g)
//   C, D (16×8, f32): c0,c1:(g, 2t and 2t+1) c2,c3:(g+8, 2t and 2t+1)
// Products of bf16 values are exact in f32; the sum is accumulated in f32
// in k order starting from C.
inline void oxk_mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  uint64_t* slots = ::oxk_emu::warp_slots();
  unsigned lane = ::oxk_emu::lane_id();
  uint64_t* mine = slots + lane * 16;
  for (int i = 0; i < 4; ++i) mine[i] = a[i];
  for (int i = 0; i < 2; ++i) mine[4 + i] = b[i];
  for (int i = 0; i < 4; ++i) mine[6 + i] = __float_as_uint(c[i]);
  ::oxk_emu::syncwarp();
  auto half_of = [](uint64_t word, unsigned k) { return (uint16_t)(word >> (16 * (k & 1))); };
  auto a_at = [&](unsigned row, unsigned k) {
    unsigned owner = (row % 8) * 4 + (k % 8) / 2, reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    return oxk_bf16_to_f32(half_of(slots[owner * 16 + reg], k));
  };
  auto b_at = [&](unsigned k, unsigned col) {
    unsigned owner = col * 4 + (k % 8) / 2, reg = k >= 8 ? 1 : 0;
    return oxk_bf16_to_f32(half_of(slots[owner * 16 + 4 + reg], k));
  };
  auto c_at = [&](unsigned row, unsigned col) {
    unsigned owner = (row % 8) * 4 + col / 2, reg = (row >= 8 ? 2 : 0) + (col & 1);
    return __uint_as_float((uint32_t)slots[owner * 16 + 6 + reg]);
  };
  float out[4];
  unsigned g = lane / 4, t = lane % 4;
  for (unsigned i = 0; i < 4; ++i) {
    unsigned row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float acc = c_at(row, col);
    for (unsigned k = 0; k < 16; ++k) acc = fmaf(a_at(row, k), b_at(k, col), acc);
    out[i] = acc;
  }
  ::oxk_emu::syncwarp();
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}


// ---- signals between ranks' streams (signal.cu) ----------------------------
// .acquire/.release loads and stores as C++ atomics; %globaltimer as the
// host's monotonic clock in nanoseconds; nanosleep as a yield.
inline uint64_t oxk_ld_acquire_u64(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void oxk_st_release_u64(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline void oxk_fence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline uint64_t oxk_globaltimer_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
inline void oxk_nanosleep(unsigned) { sched_yield(); }
