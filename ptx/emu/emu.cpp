// emu.cpp — the runtime behind emu.h: launches, barriers, warp exchange,
// cp.async queues. See emu.h for the model.
#include "emu.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace oxk_emu {

thread_local uint3 tl_thread_idx;
thread_local uint3 tl_block_idx;
dim3 g_block_dim;
dim3 g_grid_dim;

namespace {

double timeout_seconds() {
  const char* s = getenv("OXK_EMU_TIMEOUT");
  double v = s ? atof(s) : 0.0;
  return v > 0 ? v : 120.0;
}

// A reusable barrier whose party count shrinks when a thread drops out
// (returns from the kernel), with a deadline instead of a silent hang.
class Barrier {
 public:
  explicit Barrier(unsigned parties) : expected_(parties), waiting_(parties) {}
  void wait(const char* what) {
    std::unique_lock<std::mutex> lk(m_);
    unsigned gen = gen_;
    if (--waiting_ == 0) {
      release();
      return;
    }
    auto deadline = std::chrono::duration<double>(timeout_seconds());
    if (!cv_.wait_for(lk, deadline, [&] { return gen_ != gen; })) {
      fprintf(stderr,
              "oxk_emu: %s timed out in block (%u,%u,%u) thread (%u,%u,%u): "
              "a barrier not reached by every live thread\n",
              what, tl_block_idx.x, tl_block_idx.y, tl_block_idx.z, tl_thread_idx.x, tl_thread_idx.y,
              tl_thread_idx.z);
      abort();
    }
  }
  void drop() {
    std::lock_guard<std::mutex> lk(m_);
    --expected_;
    if (--waiting_ == 0) release();
  }

 private:
  void release() {
    ++gen_;
    waiting_ = expected_;
    cv_.notify_all();
  }
  std::mutex m_;
  std::condition_variable cv_;
  unsigned expected_, waiting_, gen_ = 0;
};

struct Warp {
  explicit Warp(unsigned lanes) : bar(lanes) {}
  Barrier bar;
  uint64_t slots[32 * 16] = {};
};

struct Block {
  explicit Block(unsigned threads) : bar(threads) {
    for (unsigned w = 0; w * 32 < threads; ++w) {
      unsigned lanes = threads - w * 32 < 32 ? threads - w * 32 : 32;
      warps.emplace_back(new Warp(lanes));
    }
  }
  Barrier bar;
  std::vector<std::unique_ptr<Warp>> warps;
};

struct Copy {
  void* dst;
  const void* src;
  int bytes;
};

thread_local Block* tl_block = nullptr;
thread_local unsigned tl_linear = 0;
thread_local std::vector<std::vector<Copy>> tl_groups;  // committed groups, oldest first
thread_local std::vector<Copy> tl_open;                 // not yet committed

std::mutex g_launch_lock;

// Host threads kept between launches (creating a block's worth of threads
// per launch would dominate the run time). Thread 0 of a launch is the
// caller; pool thread i plays thread i + 1. Never destroyed.
class Pool {
 public:
  void run(unsigned n, const std::function<void(unsigned)>& job) {
    while (threads_ + 1 < n) {
      unsigned id = ++threads_;
      std::thread([this, id] { loop(id); }).detach();
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &job;
      active_ = n;
      remaining_ = n - 1;
      ++generation_;
    }
    start_.notify_all();
    job(0);
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, [&] { return remaining_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(unsigned id) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(unsigned)>* job;
      {
        std::unique_lock<std::mutex> lk(m_);
        start_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (id >= active_) continue;
        job = job_;
      }
      (*job)(id);
      std::lock_guard<std::mutex> lk(m_);
      if (--remaining_ == 0) done_.notify_one();
    }
  }
  std::mutex m_;
  std::condition_variable start_, done_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned threads_ = 0, active_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

Warp& my_warp() { return *tl_block->warps[tl_linear / 32]; }

void perform(const std::vector<Copy>& group) {
  for (const Copy& c : group) {
    memcpy(c.dst, c.src, (size_t)c.bytes);
    memset((char*)c.dst + c.bytes, 0, (size_t)(16 - c.bytes));
  }
}

}  // namespace

void fail(const char* what) {
  fprintf(stderr, "oxk_emu: %s (block (%u,%u,%u) thread (%u,%u,%u))\n", what, tl_block_idx.x, tl_block_idx.y,
          tl_block_idx.z, tl_thread_idx.x, tl_thread_idx.y, tl_thread_idx.z);
  abort();
}

void syncthreads() { tl_block->bar.wait("__syncthreads"); }
void syncwarp() { my_warp().bar.wait("warp barrier"); }
unsigned lane_id() { return tl_linear % 32; }
uint64_t* warp_slots() { return my_warp().slots; }

uint32_t shfl_xor_u32(uint32_t v, int lane_mask) {
  uint64_t* s = warp_slots();
  unsigned lane = lane_id();
  s[lane * 16] = v;
  syncwarp();
  uint32_t r = (uint32_t)s[((lane ^ (unsigned)lane_mask) % 32) * 16];
  syncwarp();
  return r;
}

uint32_t shfl_down_u32(uint32_t v, unsigned delta) {
  uint64_t* s = warp_slots();
  unsigned lane = lane_id();
  s[lane * 16] = v;
  syncwarp();
  uint32_t r = lane + delta < 32 ? (uint32_t)s[(lane + delta) * 16] : v;
  syncwarp();
  return r;
}

uint32_t shfl_idx_u32(uint32_t v, int src_lane) {
  uint64_t* s = warp_slots();
  s[lane_id() * 16] = v;
  syncwarp();
  uint32_t r = (uint32_t)s[((unsigned)src_lane % 32) * 16];
  syncwarp();
  return r;
}

void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  if (src_bytes < 0 || src_bytes > 16) fail("cp.async: src-size outside 0..16");
  if (((uintptr_t)smem % 16) != 0 || (src_bytes > 0 && ((uintptr_t)gmem % 16) != 0))
    fail("cp.async: a 16-byte copy needs 16-byte aligned addresses");
  tl_open.push_back(Copy{smem, gmem, src_bytes});
}

void cp_async_commit() {
  tl_groups.push_back(std::move(tl_open));
  tl_open.clear();
}

void cp_async_wait(int newest_pending) {
  while (tl_groups.size() > (size_t)newest_pending) {
    perform(tl_groups.front());
    tl_groups.erase(tl_groups.begin());
  }
}

int launch(dim3 grid, dim3 block, const std::function<void()>& body) {
  unsigned threads = block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0) return 1;
  if (threads > 1024) return 2;
  std::lock_guard<std::mutex> serial(g_launch_lock);
  g_grid_dim = grid;
  g_block_dim = block;
  // Blocks run one after another; `gate` separates them.
  Barrier gate(threads);
  std::unique_ptr<Block> current;
  auto worker = [&](unsigned linear) {
    tl_linear = linear;
    tl_thread_idx = uint3{linear % block.x, (linear / block.x) % block.y, linear / (block.x * block.y)};
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          if (linear == 0) current.reset(new Block(threads));
          gate.wait("block start");
          tl_block = current.get();
          tl_block_idx = uint3{bx, by, bz};
          tl_groups.clear();
          tl_open.clear();
          body();
          // Copies never waited for still land (as they would on the GPU).
          cp_async_commit();
          cp_async_wait(0);
          tl_block->bar.drop();
          tl_block->warps[linear / 32]->bar.drop();
          gate.wait("block end");
        }
    tl_block = nullptr;
  };
  pool().run(threads, std::function<void(unsigned)>(worker));
  return 0;
}

}  // namespace oxk_emu
