// signal.cu — how ranks' streams signal each other on a GPU, as one-thread
// kernels on 64-bit words of device memory (the words of a rank's area,
// cuda/src/streamed/area.rs). Every value is relative to an epoch, a word
// the rank's own stream advances after each collective, so that a call's
// kernels take the same arguments every time and a CUDA graph that
// captured them can be replayed:
//
//   sig_write(word, epoch, offset)   *word = (*epoch << 32) + offset,
//                                    after a system-wide fence (the work
//                                    before it, also in peers' memory, is
//                                    visible to whoever sees the value)
//   sig_wait(word, epoch, offset,    spins (with nanosleep) until *word ≥
//            timeout_ns, fault, code)  (*epoch << 32) + offset; past
//                                    timeout_ns of %globaltimer it stores
//                                    `code` into *fault and returns, so the
//                                    host's watchdog fails the group (a
//                                    kernel cannot fail its stream without
//                                    poisoning the context); a word set to
//                                    all ones (an abort) ends every wait
//   sig_advance(epoch)               *epoch += 1
//
// Launch: one block of one thread. Loads and stores are .acquire/.release
// at system scope (peers may be other GPUs or processes).
//
// Under the host emulation (ptx/emu), kernels run one launch at a time, so
// a sig_wait whose word is not yet written would spin alone until its
// timeout; the emulated device implements the three as stream operations
// of its own with the same values (cuda/src/emudev/stream.rs), and the
// tests run these sources under the emulation for what needs no second
// stream: values, an already-satisfied wait, a released wait, a timeout.
#include "../include/oxk.cuh"

extern "C" __global__ void __launch_bounds__(1) sig_write(uint64_t* word, const uint64_t* epoch, uint64_t offset) {
  uint64_t e = oxk_ld_acquire_u64(epoch);
  oxk_fence_system();
  oxk_st_release_u64(word, (e << 32) + offset);
}

extern "C" __global__ void __launch_bounds__(1)
    sig_wait(const uint64_t* word, const uint64_t* epoch, uint64_t offset, uint64_t timeout_ns, uint64_t* fault,
             uint64_t code) {
  const uint64_t target = (oxk_ld_acquire_u64(epoch) << 32) + offset;
  const uint64_t start = oxk_globaltimer_ns();
  unsigned nap = 32;
  while (oxk_ld_acquire_u64(word) < target) {
    if (oxk_globaltimer_ns() - start > timeout_ns) {
      oxk_st_release_u64(fault, code);
      return;
    }
    oxk_nanosleep(nap);
    nap = nap < 1024 ? nap * 2 : nap;
  }
}

extern "C" __global__ void __launch_bounds__(1) sig_advance(uint64_t* epoch) {
  oxk_st_release_u64(epoch, oxk_ld_acquire_u64(epoch) + 1);
}
