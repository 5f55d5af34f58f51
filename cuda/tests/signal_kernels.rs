//! The signal kernels of `ptx/kernels/signal.cu` under the host emulation,
//! against the emulated device's own signals (which the emulated streams
//! run instead, since a spinning kernel cannot share the emulator): the
//! values written, the epoch's advance, and the three ends of a wait —
//! its word reached, its word released by an abort (all ones), and its
//! timeout, which stores the fault code and returns.

use std::sync::atomic::{AtomicU64, Ordering};

use oxccl_cuda::emudev::signal_value;
use oxccl_cuda::{Emu, EmuPlatform};

#[test]
fn sig_write_and_sig_advance_compute_what_the_emulated_stream_does() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let stream = dev.new_stream();
    let words = dev.alloc(16).unwrap();
    let (word, epoch) = (words.region().sub(0..8).unwrap(), words.region().sub(8..16).unwrap());
    for (e, offset) in [(0u64, 1u64), (5, 7), (6, 1 << 32), (u32::MAX as u64, 3)] {
        let (k_word, k_epoch) = (AtomicU64::new(0), AtomicU64::new(e));
        Emu::default().sig_write(&k_word, &k_epoch, offset).unwrap();
        words.upload(&[0u64.to_ne_bytes(), e.to_ne_bytes()].concat()).unwrap();
        stream.write_signal(word, epoch, offset).unwrap();
        stream.synchronize().unwrap();
        let from_stream = dev.peek(word).unwrap();
        assert_eq!(k_word.load(Ordering::Acquire), signal_value(e, offset), "epoch {e}, offset {offset}");
        assert_eq!(from_stream, signal_value(e, offset), "epoch {e}, offset {offset}");

        Emu::default().sig_advance(&k_epoch).unwrap();
        stream.advance(epoch).unwrap();
        stream.synchronize().unwrap();
        assert_eq!(k_epoch.load(Ordering::Acquire), e + 1);
        assert_eq!(dev.peek(epoch).unwrap(), e + 1);
    }
}

/// The suite's signal cases (`verify::signals`, which `oxccl-gpu-check`
/// runs on a GPU) pass under the emulation.
#[test]
fn sig_wait_ends_when_reached_when_released_and_at_its_timeout() {
    let outcomes = oxccl_cuda::verify::signals(&mut Emu::default()).unwrap();
    assert_eq!(outcomes.len(), 4 * 2 + 4);
    for o in outcomes {
        assert!(o.passed(), "{o}");
    }
}
