//! The emulated device: streams run in order and after the call returns,
//! events and value waits order streams, the reducer on device memory
//! matches the host's reduction, bad input is refused before anything is
//! enqueued, errors stick, and nothing waits forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxccl::mem::Region;
use oxccl::space::{MemorySpace, HOST};
use oxccl::{DType, ReduceOp};
use oxccl_cuda::kernels::{REDUCE_DTYPES, REDUCE_OPS};
use oxccl_cuda::rng::Rng;
use oxccl_cuda::{EmuPlatform, EmuSpace};

/// Random bytes that are valid, finite elements of `dtype` (small values,
/// so products stay in range; negative ones wrap for unsigned dtypes).
fn values(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let f: Vec<f32> = (0..n).map(|_| (rng.below(7) as f32) - 3.0).collect();
    let int = |x: f32| x as i64;
    match dtype {
        DType::F32 => bytemuck::cast_slice(&f).to_vec(),
        DType::F64 => f.iter().flat_map(|&x| f64::from(x).to_ne_bytes()).collect(),
        DType::F16 => f.iter().flat_map(|&x| half::f16::from_f32(x).to_bits().to_ne_bytes()).collect(),
        DType::BF16 => f.iter().flat_map(|&x| half::bf16::from_f32(x).to_bits().to_ne_bytes()).collect(),
        DType::I8 => f.iter().flat_map(|&x| (int(x) as i8).to_ne_bytes()).collect(),
        DType::U8 => f.iter().flat_map(|&x| (int(x) as u8).to_ne_bytes()).collect(),
        DType::I32 => f.iter().flat_map(|&x| (int(x) as i32).to_ne_bytes()).collect(),
        DType::U32 => f.iter().flat_map(|&x| (int(x) as u32).to_ne_bytes()).collect(),
        DType::I64 => f.iter().flat_map(|&x| int(x).to_ne_bytes()).collect(),
        DType::U64 => f.iter().flat_map(|&x| (int(x) as u64).to_ne_bytes()).collect(),
    }
}

#[test]
fn a_stream_runs_after_the_call_returns_and_in_order() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let (flag, src, dst) = (dev.alloc(8).unwrap(), dev.alloc(64).unwrap(), dev.alloc(64).unwrap());
    src.upload(&[7u8; 64]).unwrap();
    let (s1, s2) = (dev.new_stream(), dev.new_stream());
    let abort = Arc::new(AtomicBool::new(false));
    s1.wait_value(flag.region(), 1, "test".into(), abort).unwrap();
    // SAFETY: both are device buffers that outlive the stream's work (dropping them waits).
    unsafe { s1.copy(dst.region(), src.region()) }.unwrap();
    let copied = s1.record();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!copied.query(), "the copy ran before the flag was set");
    s2.write_value(flag.region(), 1).unwrap();
    copied.synchronize(Duration::from_secs(10)).unwrap();
    assert_eq!(dst.download(), vec![7u8; 64]);
    s1.synchronize().unwrap();
    s2.synchronize().unwrap();
}

#[test]
fn an_event_orders_two_streams() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let (gate, a, b, c) =
        (dev.alloc(8).unwrap(), dev.alloc(16).unwrap(), dev.alloc(16).unwrap(), dev.alloc(16).unwrap());
    a.upload(&[3u8; 16]).unwrap();
    let (s1, s2) = (dev.new_stream(), dev.new_stream());
    // s1: wait for the gate, then b = a. s2: after s1's event, c = b.
    s1.wait_value(gate.region(), 5, "test".into(), Arc::new(AtomicBool::new(false))).unwrap();
    // SAFETY: device buffers that outlive the work.
    unsafe { s1.copy(b.region(), a.region()) }.unwrap();
    let ev = s1.record();
    s2.wait_event(&ev);
    // SAFETY: as above.
    unsafe { s2.copy(c.region(), b.region()) }.unwrap();
    let done = s2.record();
    std::thread::sleep(Duration::from_millis(30));
    assert!(!done.query());
    let s3 = dev.new_stream();
    s3.write_value(gate.region(), 5).unwrap();
    s2.synchronize().unwrap();
    assert_eq!(c.download(), vec![3u8; 16]);
}

#[test]
fn the_reducer_on_device_memory_matches_the_host() {
    let mut rng = Rng::new(Rng::seed_from_env());
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let stream = dev.new_stream();
    for dtype in REDUCE_DTYPES {
        for op in REDUCE_OPS {
            for n in [0usize, 1, 7, 1031] {
                let (x, y) = (values(&mut rng, dtype, n), values(&mut rng, dtype, n));
                let bytes = n * dtype.size();
                let (a, b, d) = (dev.alloc(bytes).unwrap(), dev.alloc(bytes).unwrap(), dev.alloc(bytes).unwrap());
                a.upload(&x).unwrap();
                b.upload(&y).unwrap();
                d.upload(&vec![0xAB; bytes]).unwrap();
                // SAFETY: device buffers that outlive the work (each is dropped after the sync).
                unsafe { stream.reduce(dtype, op, d.region(), a.region(), b.region()) }.unwrap();
                // SAFETY: as above; in place (dst = a).
                unsafe { stream.reduce(dtype, op, a.region(), a.region(), b.region()) }.unwrap();
                stream.synchronize().unwrap();
                // The host's reduction as the reference, on 8-byte aligned copies.
                let aligned = |v: &[u8]| {
                    let mut w = vec![0u64; bytes.div_ceil(8)];
                    bytemuck::cast_slice_mut::<u64, u8>(&mut w)[..bytes].copy_from_slice(v);
                    w
                };
                let (ax, ay, mut want) = (aligned(&x), aligned(&y), vec![0u64; bytes.div_ceil(8)]);
                let view = |w: &[u64]| Region::of(&bytemuck::cast_slice(w)[..bytes]);
                let out = Region::of_mut(&mut bytemuck::cast_slice_mut(&mut want)[..bytes]);
                // SAFETY: three distinct host vectors.
                unsafe { HOST.reduce(dtype, op, out, view(&ax), view(&ay)) };
                let want = &bytemuck::cast_slice::<u64, u8>(&want)[..bytes];
                assert_eq!(d.download(), want, "{op} on {n} {dtype}");
                assert_eq!(a.download(), want, "{op} on {n} {dtype}, in place");
            }
        }
    }
}

#[test]
fn bad_input_is_refused_before_anything_is_enqueued() {
    let platform = EmuPlatform::with_peer_access(2, |_, _| false);
    let (d0, d1) = (platform.device(0).unwrap(), platform.device(1).unwrap());
    let (a, b, other) = (d0.alloc(16).unwrap(), d0.alloc(16).unwrap(), d1.alloc(16).unwrap());
    let mut host = vec![0u8; 16];
    let s = d0.new_stream();
    let err = |r: oxccl_cuda::Result<()>| r.unwrap_err().to_string();
    // SAFETY: every call below is refused before it enqueues anything.
    unsafe {
        let host = Region::of_mut(&mut host);
        assert!(err(s.reduce(DType::F32, ReduceOp::Sum, host, a.region(), b.region())).contains("not device memory"));
        assert!(err(s.reduce(DType::F32, ReduceOp::Sum, a.region(), other.region(), b.region()))
            .contains("cannot access device 1"));
        assert!(err(s.reduce(DType::F32, ReduceOp::Avg, a.region(), a.region(), b.region())).contains("no reducer"));
        let short = b.region().sub(0..8).unwrap();
        assert!(s.reduce(DType::F32, ReduceOp::Sum, a.region(), a.region(), short).is_err());
        assert!(s.copy(a.region(), short).is_err());
        assert!(err(s.copy(a.region(), other.region())).contains("cannot access device 1"));
        assert!(s.copy(host, a.region()).is_ok(), "host memory is fine (the vector outlives the sync below)");
    }
    assert!(s.write_value(a.region(), 1).is_err(), "16 bytes are not a flag word");
    assert!(platform.device(2).is_err());
    assert_eq!(platform.device_of(other.region()), Some(1));
    assert_eq!(platform.device_of(Region::of(&host)), None);
    s.synchronize().unwrap();
    assert_eq!(a.download(), vec![0u8; 16], "nothing wrote it");
}

#[test]
fn peer_access_lets_a_kernel_read_another_devices_memory() {
    let platform = EmuPlatform::with_peer_access(2, |a, b| (a, b) == (0, 1));
    let (d0, d1) = (platform.device(0).unwrap(), platform.device(1).unwrap());
    assert!(d0.can_access_peer(1) && !d1.can_access_peer(0));
    let (mine, theirs) = (d0.alloc(8).unwrap(), d1.alloc(8).unwrap());
    mine.upload(bytemuck::cast_slice(&[1f32, 2.0])).unwrap();
    theirs.upload(bytemuck::cast_slice(&[10f32, 20.0])).unwrap();
    let s = d0.new_stream();
    // SAFETY: device buffers that outlive the work.
    unsafe { s.reduce(DType::F32, ReduceOp::Sum, mine.region(), mine.region(), theirs.region()) }.unwrap();
    s.synchronize().unwrap();
    assert_eq!(mine.download(), bytemuck::cast_slice::<f32, u8>(&[11.0, 22.0]));
}

#[test]
fn a_wait_that_times_out_fails_the_stream_and_the_error_sticks() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let (flag, a, b) = (dev.alloc(8).unwrap(), dev.alloc(8).unwrap(), dev.alloc(8).unwrap());
    a.upload(&[1u8; 8]).unwrap();
    let mut s = dev.new_stream();
    s.set_timeout(Duration::from_millis(100));
    s.wait_value(flag.region(), 1, "test".into(), Arc::new(AtomicBool::new(false))).unwrap();
    // SAFETY: device buffers that outlive the work.
    unsafe { s.copy(b.region(), a.region()) }.unwrap();
    let started = Instant::now();
    let e = s.synchronize().unwrap_err().to_string();
    assert!(e.contains("stayed below 1"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(b.download(), vec![0u8; 8], "work after the failure is skipped");
    assert!(s.synchronize().is_err(), "the error sticks");
}

#[test]
fn abort_releases_a_stream_waiting_on_a_flag() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let flag = dev.alloc(8).unwrap();
    let s = dev.new_stream();
    let abort = Arc::new(AtomicBool::new(false));
    s.wait_value(flag.region(), 1, "test".into(), abort.clone()).unwrap();
    let done = s.record();
    std::thread::sleep(Duration::from_millis(20));
    assert!(!done.query());
    abort.store(true, Ordering::Release);
    let e = s.synchronize().unwrap_err().to_string();
    assert!(e.contains("aborted"), "{e}");
}

#[test]
fn the_memory_space_enqueues_and_completes() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let space = EmuSpace::new(dev.new_stream());
    let (a, b, d) = (dev.alloc(12).unwrap(), dev.alloc(12).unwrap(), dev.alloc(12).unwrap());
    a.upload(bytemuck::cast_slice(&[1f32, 2.0, 3.0])).unwrap();
    b.upload(bytemuck::cast_slice(&[4f32, 5.0, 6.0])).unwrap();
    // SAFETY: device buffers that outlive the work (complete waits for it).
    unsafe {
        space.reduce(DType::F32, ReduceOp::Max, d.region(), a.region(), b.region());
        space.reduce(DType::F32, ReduceOp::Sum, d.region(), d.region(), a.region());
        space.copy(b.region(), d.region(), false);
    }
    space.complete().unwrap();
    assert_eq!(b.download(), bytemuck::cast_slice::<f32, u8>(&[5.0, 7.0, 9.0]));
    assert_eq!(space.name(), "emu:0");
    assert!(space.as_host().is_none());

    // A refused operation is reported by the next complete, which then starts afresh.
    let mut host = [0u8; 12];
    // SAFETY: refused before anything is enqueued.
    unsafe { space.reduce(DType::F32, ReduceOp::Sum, Region::of_mut(&mut host), a.region(), b.region()) };
    let e = space.complete().unwrap_err();
    assert!(e.to_string().contains("not device memory"), "{e}");
    // Avg's division by its kernel (integers truncate toward zero); a region of
    // partial elements is refused.
    // SAFETY: device memory that outlives the work.
    unsafe { space.finalize(DType::F32, ReduceOp::Avg, 4, d.region()) };
    space.complete().unwrap();
    assert_eq!(d.download(), bytemuck::cast_slice::<f32, u8>(&[1.25, 1.75, 2.25]));
    let (x, y) = (dev.alloc(16).unwrap(), dev.alloc(16).unwrap());
    x.upload(bytemuck::cast_slice(&[-7f64, 3.0])).unwrap();
    y.upload(bytemuck::cast_slice(&[-7i64, 3])).unwrap();
    // SAFETY: as above.
    unsafe {
        space.finalize(DType::F64, ReduceOp::Avg, 4, x.region());
        space.finalize(DType::I64, ReduceOp::Avg, 4, y.region());
    }
    space.complete().unwrap();
    assert_eq!(x.download(), bytemuck::cast_slice::<f64, u8>(&[-1.75, 0.75]));
    assert_eq!(y.download(), bytemuck::cast_slice::<i64, u8>(&[-1, 0]));
    // SAFETY: as above.
    unsafe { space.finalize(DType::F64, ReduceOp::Avg, 4, d.region()) };
    let e = space.complete().unwrap_err();
    assert!(e.to_string().contains("12 bytes over 4 ranks"), "{e}");
    assert!(space.complete().is_ok());
}

#[test]
fn dropping_a_buffer_waits_for_the_work_that_uses_it() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let (flag, buf) = (dev.alloc(8).unwrap(), dev.alloc(1 << 20).unwrap());
    let s = dev.new_stream();
    s.wait_value(flag.region(), 1, "test".into(), Arc::new(AtomicBool::new(false))).unwrap();
    s.write_value(buf.region().sub(0..8).unwrap(), 9).unwrap();
    let setter = {
        let (d, f) = (dev.clone(), flag.region());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let s2 = d.new_stream();
            s2.write_value(f, 1).unwrap();
            s2.synchronize().unwrap();
        })
    };
    let started = Instant::now();
    drop(buf); // waits for the stream: the write into it runs first
    assert!(started.elapsed() >= Duration::from_millis(40));
    s.synchronize().unwrap();
    setter.join().unwrap();
}

/// The multi-reducer on a stream: sources combined into every destination
/// in one kernel, a destination may be a source (in place), avg fused; a
/// destination that partly overlaps a source is refused before anything
/// is enqueued.
#[test]
fn the_multi_reducer_writes_every_destination() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let bufs: Vec<_> = (0..3).map(|_| dev.alloc(16).unwrap()).collect();
    for (i, b) in bufs.iter().enumerate() {
        b.upload(bytemuck::cast_slice(&[i as f32 + 1.0; 4])).unwrap();
    }
    let out = dev.alloc(16).unwrap();
    let s = dev.new_stream();
    let srcs: Vec<Region> = bufs.iter().map(|b| b.region()).collect();
    // SAFETY: device buffers that outlive the work (synchronized below).
    unsafe { s.reduce_multi(DType::F32, ReduceOp::Sum, &srcs, &[srcs[0], out.region()], 3) }.unwrap();
    s.synchronize().unwrap();
    assert_eq!(out.download(), bytemuck::cast_slice::<f32, u8>(&[2.0; 4]));
    assert_eq!(bufs[0].download(), bytemuck::cast_slice::<f32, u8>(&[2.0; 4]));
    let part = bufs[1].region().sub(4..12).unwrap();
    let whole = bufs[2].region().sub(0..8).unwrap();
    // SAFETY: refused before anything is enqueued.
    let e =
        unsafe { s.reduce_multi(DType::F32, ReduceOp::Max, &[part, whole], &[bufs[1].region().sub(0..8).unwrap()], 0) };
    assert!(e.unwrap_err().to_string().contains("overlaps"));
}
