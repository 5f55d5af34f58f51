//! Stream-ordered collectives on the emulated device (`StreamComm`): every
//! collective and algorithm, worlds 1-4, awkward counts, in and out of
//! place, many calls enqueued back to back before the stream is waited
//! for, outputs checked element by element against a sequential reduction;
//! the call returns before its work runs; a rank that stops is named by
//! the survivors' async-error query, abort releases waiting streams; bad
//! input is an error before anything is enqueued.

use std::sync::Arc;
use std::time::{Duration, Instant};

use oxccl::{Algorithm, Call, Collective, Config, DType, ErrorKind, ReduceOp, Regions};
use oxccl_cuda::{Buffers, EmuBuffer, EmuDevice, EmuPlatform, GroupPart, StreamComm};

mod common;
use common::{expected, floats, sum_f32, upload, value};

/// One call of a test: algorithm, collective, op, count, in place.
type Case = (Algorithm, Collective, ReduceOp, usize, bool);

fn group(devices: &[Arc<EmuDevice>], timeout: Duration) -> Vec<StreamComm> {
    // Small slots, so that the staged algorithms cut messages at small counts.
    StreamComm::local_group(devices, Config { device_slice_bytes: 1024, timeout, ..Config::default() }).unwrap()
}

/// Rank `r`'s buffers for `case`: (send, recv), the same buffer in place.
fn buffers(dev: &Arc<EmuDevice>, n: usize, r: usize, case: Case) -> (EmuBuffer, Option<EmuBuffer>) {
    let (_, c, _, count, in_place) = case;
    let input: Vec<f32> = (0..c.input_len(n, count)).map(|i| value(r, i)).collect();
    match in_place {
        true => {
            let (io, _) = c.in_place_offsets(r, count);
            let mut whole = vec![-99f32; c.in_place_len(n, count)];
            whole[io..io + input.len()].copy_from_slice(&input);
            (upload(dev, &whole), None)
        }
        false => (upload(dev, &input), Some(upload(dev, &vec![-99f32; c.output_len(n, count)]))),
    }
}

/// Every rank enqueues every case on its stream back to back, then waits
/// for the stream once and checks every output.
fn run_cases(devices: &[Arc<EmuDevice>], cases: &[Case]) {
    let n = devices.len();
    let comms = group(devices, Duration::from_secs(60));
    std::thread::scope(|s| {
        for comm in comms {
            s.spawn(move || {
                let (r, dev) = (comm.rank(), comm.device().clone());
                let stream = dev.new_stream();
                let root = n / 2;
                let bufs: Vec<_> = cases.iter().map(|&case| buffers(&dev, n, r, case)).collect();
                for (&(algo, c, op, count, in_place), (send, recv)) in cases.iter().zip(&bufs) {
                    let call = Call { collective: c, dtype: DType::F32, op, count, root, algorithm: Some(algo) };
                    let regions = match recv {
                        Some(recv) => Regions::OutOfPlace { send: send.region(), recv: recv.region() },
                        None => Regions::InPlace(send.region()),
                    };
                    let label = format!("{algo} {c} {op} of {count} on {n} ranks, in place {in_place}, rank {r}");
                    // SAFETY: the buffers live until after the stream is waited for, below.
                    unsafe { comm.enqueue(&call, regions, &stream) }.expect(&label);
                }
                stream.synchronize().unwrap_or_else(|e| panic!("rank {r}: {e}; group: {:?}", comm.async_error()));
                for (&(algo, c, op, count, in_place), (send, recv)) in cases.iter().zip(&bufs) {
                    let label = format!("{algo} {c} {op} of {count} on {n} ranks, in place {in_place}, rank {r}");
                    let out_len = c.output_len(n, count);
                    let got = match recv {
                        Some(recv) => floats(recv),
                        None => {
                            let (_, oo) = c.in_place_offsets(r, count);
                            floats(send)[oo..oo + out_len].to_vec()
                        }
                    };
                    match expected(c, op, n, r, count, root) {
                        Some(want) => assert_eq!(got, want, "{label}"),
                        None if !in_place => assert!(got.iter().all(|&x| x == -99.0), "{label}: output written"),
                        None => {}
                    }
                }
                assert!(comm.async_error().is_none());
            });
        }
    });
}

/// Every collective of `algo`, both ops that reduce, in and out of place.
fn cases(algo: Algorithm, counts: &[usize]) -> Vec<Case> {
    let mut cases = Vec::new();
    for &count in counts {
        for in_place in [false, true] {
            for c in [Collective::AllReduce, Collective::ReduceScatter, Collective::Reduce] {
                for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Avg] {
                    // Avg at two counts only (each division is a kernel launch).
                    if op != ReduceOp::Avg || count == 13 || count == 2053 {
                        cases.push((algo, c, op, count, in_place));
                    }
                }
            }
            for c in [Collective::AllGather, Collective::Broadcast, Collective::AllToAll] {
                // In-place all-to-all on ring, tree and halving-doubling is not offered by every
                // schedule: only direct stages it.
                if c != Collective::AllToAll || !in_place || algo == Algorithm::Direct {
                    cases.push((algo, c, ReduceOp::Sum, count, in_place));
                }
            }
        }
    }
    cases
}

/// Counts: 0, 1, primes, not divisible by the world; 1031 and 2053 floats
/// take 5 and 9 messages of 1 KiB.
const COUNTS: [usize; 6] = [0, 1, 7, 13, 1031, 2053];

fn on_one_device(algo: Algorithm) {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    for n in 1..=4 {
        run_cases(&vec![dev.clone(); n], &cases(algo, &COUNTS));
    }
}

#[test]
fn direct_on_one_device() {
    on_one_device(Algorithm::Direct);
}

#[test]
fn ring_on_one_device() {
    on_one_device(Algorithm::Ring);
}

#[test]
fn tree_on_one_device() {
    on_one_device(Algorithm::Tree);
}

#[test]
fn halving_doubling_on_one_device() {
    on_one_device(Algorithm::HalvingDoubling);
}

/// Ranks spread over three devices with peer access, two sharing one.
/// One element of `dtype` holding the small integer `v` (wrapped, for the
/// unsigned dtypes), as its bytes.
fn element(dtype: DType, v: f32) -> Vec<u8> {
    let i = v as i64;
    match dtype {
        DType::F32 => v.to_ne_bytes().to_vec(),
        DType::F64 => f64::from(v).to_ne_bytes().to_vec(),
        DType::F16 => half::f16::from_f32(v).to_ne_bytes().to_vec(),
        DType::BF16 => half::bf16::from_f32(v).to_ne_bytes().to_vec(),
        DType::I8 => (i as i8).to_ne_bytes().to_vec(),
        DType::U8 => (i as u8).to_ne_bytes().to_vec(),
        DType::I32 => (i as i32).to_ne_bytes().to_vec(),
        DType::U32 => (i as u32).to_ne_bytes().to_vec(),
        DType::I64 => i.to_ne_bytes().to_vec(),
        DType::U64 => (i as u64).to_ne_bytes().to_vec(),
    }
}

/// Every dtype through the device reducers end to end: all-reduces over
/// three ranks by direct (one multi-reducer kernel, avg fused) and by ring
/// (the pairwise reducer on messages that start at odd element offsets,
/// then avg's division), prod, max and avg, checked bit for bit against
/// the host's reducer. Small integer inputs: every order of combining
/// gives the same result.
#[test]
fn every_dtype_all_reduces_through_the_kernels() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let (n, count) = (3, 37);
    let input = |dtype: DType, r: usize| -> Vec<u8> { (0..count).flat_map(|i| element(dtype, value(r, i))).collect() };
    for algo in [Algorithm::Direct, Algorithm::Ring] {
        let comms = group(&vec![dev.clone(); n], Duration::from_secs(60));
        std::thread::scope(|s| {
            for comm in comms {
                s.spawn(move || {
                    let (r, dev) = (comm.rank(), comm.device().clone());
                    let stream = dev.new_stream();
                    for dtype in oxccl_cuda::kernels::REDUCE_DTYPES {
                        let bytes = count * dtype.size();
                        for op in [ReduceOp::Prod, ReduceOp::Max, ReduceOp::Avg] {
                            let (send, recv) = (dev.alloc(bytes).unwrap(), dev.alloc(bytes).unwrap());
                            send.upload(&input(dtype, r)).unwrap();
                            let call = Call {
                                collective: Collective::AllReduce,
                                dtype,
                                op,
                                count,
                                root: 0,
                                algorithm: Some(algo),
                            };
                            let label = format!("{algo} {op} on {dtype}, rank {r}");
                            comm.run(&call, Buffers::of(&send, &recv), &stream).expect(&label);
                            // The host's reducer, on 8-byte aligned words.
                            let mut want = vec![0u64; bytes.div_ceil(8)];
                            let acc = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut want)[..bytes];
                            acc.copy_from_slice(&input(dtype, 0));
                            for p in 1..n {
                                let mut term = vec![0u64; bytes.div_ceil(8)];
                                let t = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut term)[..bytes];
                                t.copy_from_slice(&input(dtype, p));
                                oxccl::reduce::reduce_in_place(dtype, op, acc, t);
                            }
                            oxccl::reduce::finalize(dtype, op, n, acc);
                            assert_eq!(recv.download(), acc, "{label}");
                        }
                    }
                });
            }
        });
    }
}

#[test]
fn ranks_on_several_devices() {
    let platform = EmuPlatform::new(3);
    let devs: Vec<_> = [0, 1, 2, 0].iter().map(|&d| platform.device(d).unwrap()).collect();
    let mut all = Vec::new();
    for algo in [Algorithm::Direct, Algorithm::Ring, Algorithm::Tree] {
        for count in [13, 2053] {
            all.push((algo, Collective::AllReduce, ReduceOp::Sum, count, false));
            all.push((algo, Collective::AllReduce, ReduceOp::Min, count, true));
            all.push((algo, Collective::AllGather, ReduceOp::Sum, count, false));
            all.push((algo, Collective::ReduceScatter, ReduceOp::Max, count, true));
        }
    }
    run_cases(&devs, &all);
}

/// The call returns once enqueued: a rank whose stream is held back by a
/// gate holds back the others' streams (their work waits on its messages,
/// on their streams), and everything runs once the gate opens.
#[test]
fn the_call_returns_before_its_work_runs() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let gate = dev.alloc(8).unwrap();
    let comms = group(&[dev.clone(), dev.clone()], Duration::from_secs(30));
    // Uploads wait for the device's streams: every rank uploads before any stream is held.
    let uploaded = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for comm in comms {
            let (dev, gate, uploaded) = (dev.clone(), &gate, &uploaded);
            s.spawn(move || {
                let r = comm.rank();
                let stream = dev.new_stream();
                let (send, recv) = (upload(&dev, &[r as f32 + 1.0; 1000]), upload(&dev, &[0.0; 1000]));
                uploaded.wait();
                if r == 1 {
                    let never = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    stream.wait_value(gate.region(), 1, "gate".into(), never).unwrap();
                }
                let call = Call { algorithm: Some(Algorithm::Ring), ..sum_f32(1000) };
                let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
                // SAFETY: the buffers live until the stream is waited for below.
                unsafe { comm.enqueue(&call, bufs, &stream) }.unwrap();
                let done = stream.record();
                std::thread::sleep(Duration::from_millis(100));
                assert!(!done.query(), "rank {r}: the all-reduce ran before rank 1's gate opened");
                if r == 0 {
                    let opener = dev.new_stream();
                    opener.write_value(gate.region(), 1).unwrap();
                    opener.synchronize().unwrap();
                }
                stream.synchronize().unwrap();
                assert_eq!(floats(&recv), vec![3.0; 1000]);
            });
        }
    });
}

/// Rank 2 enters the call but its stream never gets to it (a rank whose
/// GPU work stopped): the survivors' streams give up after the timeout,
/// and their async-error query names rank 2; the next call fails at once.
#[test]
fn a_stopped_rank_is_named_by_the_async_error_query() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let gate = dev.alloc(8).unwrap();
    let comms = group(&vec![dev.clone(); 3], Duration::from_millis(500));
    let uploaded = std::sync::Barrier::new(3);
    let errors: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let (dev, gate, uploaded) = (dev.clone(), &gate, &uploaded);
                s.spawn(move || {
                    let r = comm.rank();
                    let stream = dev.new_stream();
                    let (send, recv) = (upload(&dev, &[1.0; 64]), upload(&dev, &[0.0; 64]));
                    uploaded.wait();
                    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    if r == 2 {
                        stream.wait_value(gate.region(), 1, "stopped rank".into(), stopped.clone()).unwrap();
                    }
                    let call = Call { algorithm: Some(Algorithm::Direct), ..sum_f32(64) };
                    let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
                    // SAFETY: the buffers live until the stream is waited for below.
                    unsafe { comm.enqueue(&call, bufs, &stream) }.unwrap();
                    if r == 2 {
                        // Until the survivors have given up; then let the stream go.
                        let start = Instant::now();
                        while comm.async_error().is_none() && start.elapsed() < Duration::from_secs(20) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        stopped.store(true, std::sync::atomic::Ordering::Release);
                    }
                    let failed = stream.synchronize().is_err();
                    let next = comm.all_reduce(&send, &recv, 64, DType::F32, ReduceOp::Sum, &stream);
                    (r, failed, comm.async_error(), next.err())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (r, failed, async_error, next) in errors {
        assert!(failed, "rank {r}'s stream did not fail");
        let e = async_error.unwrap_or_else(|| panic!("rank {r}: no async error"));
        if r != 2 {
            assert_eq!(e.kind(), ErrorKind::Timeout, "rank {r}: {e}");
            assert!(e.to_string().contains("waiting for rank 2"), "rank {r}: {e}");
        }
        assert!(next.is_some(), "rank {r}: the next call ran");
    }
}

/// Abort releases every stream waiting on the group well before the
/// timeout: every rank enqueued its call, rank 2's stream is held back, so
/// the others' streams wait on its words until rank 2 aborts the group.
#[test]
fn abort_releases_waiting_streams() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let gate = dev.alloc(8).unwrap();
    let comms = group(&vec![dev.clone(); 3], Duration::from_secs(60));
    let uploaded = std::sync::Barrier::new(3);
    let started = Instant::now();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let (dev, gate, uploaded) = (dev.clone(), &gate, &uploaded);
                s.spawn(move || {
                    let r = comm.rank();
                    let stream = dev.new_stream();
                    let (send, recv) = (upload(&dev, &[1.0; 64]), upload(&dev, &[0.0; 64]));
                    uploaded.wait();
                    let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    if r == 2 {
                        stream.wait_value(gate.region(), 1, "held".into(), held.clone()).unwrap();
                    }
                    let call = Call { algorithm: Some(Algorithm::Ring), ..sum_f32(64) };
                    let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
                    // SAFETY: the buffers live until the stream is waited for below.
                    unsafe { comm.enqueue(&call, bufs, &stream) }.unwrap();
                    if r == 2 {
                        std::thread::sleep(Duration::from_millis(200));
                        comm.abort("test");
                        held.store(true, std::sync::atomic::Ordering::Release);
                    }
                    (stream.synchronize().is_err(), comm.async_error())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    for (r, (failed, e)) in outs.into_iter().enumerate() {
        assert!(failed, "rank {r}'s stream ran to the end");
        let e = e.unwrap_or_else(|| panic!("rank {r}: no async error"));
        assert_eq!(e.kind(), ErrorKind::RemoteFailure, "rank {r}: {e}");
        assert!(e.to_string().contains("test"), "rank {r}: {e}");
    }
}

/// Bad input is an error before anything is enqueued, and the group stays
/// usable: host memory, another device's buffer, a short buffer, a stream
/// of another device; arguments the ranks disagree on are a mismatch.
#[test]
fn bad_input_is_refused_before_anything_is_enqueued() {
    let platform = EmuPlatform::new(2);
    let (dev, other) = (platform.device(0).unwrap(), platform.device(1).unwrap());
    let comms = group(std::slice::from_ref(&dev), Duration::from_secs(10));
    let comm = &comms[0];
    let stream = dev.new_stream();
    let (send, recv, elsewhere) = (upload(&dev, &[2.0; 8]), upload(&dev, &[0.0; 8]), upload(&other, &[0.0; 8]));
    let mut host = vec![0f32; 8];
    let host = oxccl::mem::Region::of_mut(bytemuck::cast_slice_mut(&mut host));
    let err = |call: Call, send, recv, stream| {
        // SAFETY: device buffers live for the test; the others are refused before anything is
        // enqueued.
        let e = unsafe { comm.enqueue(&call, Regions::OutOfPlace { send, recv }, stream) }.unwrap_err();
        e.to_string()
    };
    let call = sum_f32(8);
    let e = err(call, host, recv.region(), &stream);
    assert!(e.contains("send buffer") && e.contains("not device memory"), "{e}");
    let e = err(call, send.region(), elsewhere.region(), &stream);
    assert!(e.contains("receive buffer") && e.contains("device 1's memory"), "{e}");
    let e = err(Call { count: 9, ..call }, send.region(), recv.region(), &stream);
    assert!(e.contains("too small"), "{e}");
    let foreign = other.new_stream();
    let e = err(call, send.region(), recv.region(), &foreign);
    assert!(e.contains("a stream of emu:1"), "{e}");
    assert!(comm.async_error().is_none());
    comm.run(&call, Buffers::of(&send, &recv), &stream).unwrap();
    assert_eq!(floats(&recv), vec![2.0; 8]);

    // Two ranks that disagree on the count: a mismatch, nothing enqueued.
    let comms = group(&[dev.clone(), dev.clone()], Duration::from_secs(10));
    let outs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let dev = dev.clone();
                s.spawn(move || {
                    let stream = dev.new_stream();
                    let (send, recv) = (upload(&dev, &[1.0; 8]), upload(&dev, &[0.0; 8]));
                    let count = 7 + comm.rank();
                    comm.all_reduce(&send, &recv, count, DType::F32, ReduceOp::Sum, &stream).unwrap_err().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(outs.iter().any(|e| e.contains("disagree on count")), "{outs:?}");
}

/// One thread drives every rank (`ncclGroupStart`/`ncclGroupEnd` over the
/// ranks of `ncclCommInitAll`): each call is entered on every rank at once,
/// and the streams hold the right sums, call after call, for direct and ring.
#[test]
fn one_thread_drives_every_rank_through_groups() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let mut comms = group(&vec![dev.clone(); 3], Duration::from_secs(30));
    let streams: Vec<_> = (0..3).map(|_| dev.new_stream()).collect();
    let count = 1031;
    let sends: Vec<_> = (0..3).map(|r| upload(&dev, &vec![r as f32 + 1.0; count])).collect();
    let recvs: Vec<_> = (0..3).map(|_| upload(&dev, &vec![0.0; count])).collect();
    for (i, algo) in [Algorithm::Direct, Algorithm::Ring, Algorithm::Tree, Algorithm::Direct].into_iter().enumerate() {
        let call = Call { algorithm: Some(algo), ..sum_f32(count) };
        let mut parts: Vec<GroupPart<'_>> = comms
            .iter_mut()
            .zip(&streams)
            .enumerate()
            .map(|(r, (comm, stream))| GroupPart {
                comm,
                call,
                bufs: Regions::OutOfPlace { send: sends[r].region(), recv: recvs[r].region() },
                stream,
            })
            .collect();
        // SAFETY: the buffers live until the streams are waited for, below.
        let results = unsafe { StreamComm::enqueue_group(&mut parts) };
        assert!(results.iter().all(Result::is_ok), "call {i}: {results:?}");
        for (r, s) in streams.iter().enumerate() {
            s.synchronize().unwrap();
            assert_eq!(floats(&recvs[r]), vec![6.0; count], "call {i} ({algo}), rank {r}");
        }
    }
}

/// A device whose waits, like a GPU's, see only their word: the emulated
/// device with the group's watch taken away, and a `release` that sets the
/// words as `GpuDevice::release` does.
mod blind {
    use std::sync::Arc;

    use oxccl::mem::Region;
    use oxccl::{DType, ReduceOp};
    use oxccl_cuda::emudev::{EmuGraph, OnError, Watch};
    use oxccl_cuda::streamed::backend::{DeviceMemory, DeviceQueue, Wait};
    use oxccl_cuda::{EmuBuffer, EmuDevice, EmuEvent, EmuStream, Result};

    pub struct Blind(pub Arc<EmuDevice>);
    pub struct BlindStream(pub EmuStream);

    /// A GPU wait's view: only its timeout, which it reports in the fault word.
    struct Faulting {
        fault: Region,
        code: u64,
        timeout: std::time::Duration,
    }

    impl Watch for Faulting {
        fn stop(&self) -> Option<String> {
            None
        }
        fn timeout(&self) -> Option<std::time::Duration> {
            Some(self.timeout)
        }
        fn timed_out(&self, _waited: std::time::Duration) {
            // SAFETY: the fault word is 8 aligned bytes of the rank's area, live for the group.
            let word = unsafe { &*(self.fault.addr() as *const std::sync::atomic::AtomicU64) };
            word.store(self.code, std::sync::atomic::Ordering::Release);
        }
    }

    impl DeviceQueue for BlindStream {
        type Event = EmuEvent;
        type Graph = EmuGraph;

        unsafe fn copy(&self, dst: Region, src: Region) -> Result<()> {
            // SAFETY: the caller's contract, passed on.
            unsafe { self.0.copy(dst, src) }
        }
        unsafe fn reduce(&self, dtype: DType, op: ReduceOp, dst: Region, a: Region, b: Region) -> Result<()> {
            // SAFETY: as above.
            unsafe { self.0.reduce(dtype, op, dst, a, b) }
        }
        unsafe fn reduce_multi(&self, d: DType, op: ReduceOp, s: &[Region], t: &[Region], avg: u32) -> Result<()> {
            // SAFETY: as above.
            unsafe { self.0.reduce_multi(d, op, s, t, avg) }
        }
        unsafe fn avg_div(&self, dtype: DType, dst: Region, world: u32) -> Result<()> {
            // SAFETY: as above.
            unsafe { self.0.avg_div(dtype, dst, world) }
        }
        fn write_signal(&self, word: Region, epoch: Region, offset: u64) -> Result<()> {
            self.0.write_signal(word, epoch, offset)
        }
        /// Ignores the group, as a GPU's wait does, and on its timeout
        /// says so in the fault word, as `sig_wait` does (the stream
        /// fails too here, which nobody hears of: see `on_error`).
        fn wait_signal(&self, word: Region, epoch: Region, offset: u64, wait: Wait) -> Result<()> {
            let watch = Arc::new(Faulting { fault: wait.fault, code: wait.code, timeout: wait.timeout });
            self.0.wait_signal(word, epoch, offset, wait.what, watch)
        }
        fn advance(&self, epoch: Region) -> Result<()> {
            self.0.advance(epoch)
        }
        fn record(&self) -> Result<EmuEvent> {
            Ok(self.0.record())
        }
        fn wait_event(&self, event: &EmuEvent) -> Result<()> {
            self.0.wait_event(event);
            Ok(())
        }
        fn begin_capture(&self) -> Result<()> {
            self.0.begin_capture()
        }
        fn end_capture(&self) -> Result<EmuGraph> {
            self.0.end_capture()
        }
        fn capturing(&self) -> bool {
            self.0.capturing()
        }
        fn launch_graph(&self, graph: &EmuGraph) -> Result<()> {
            graph.launch(&self.0)
        }
        /// A GPU's stream has no such hook.
        fn on_error(&self, _hook: OnError) {}
        fn synchronize(&self) -> Result<()> {
            self.0.synchronize()
        }
    }

    impl DeviceMemory for Blind {
        type Buffer = EmuBuffer;
        type Stream = BlindStream;
        const WAITS_WATCH: bool = false;
        fn name(&self) -> String {
            self.0.name()
        }
        fn alloc(self: &Arc<Self>, bytes: usize) -> Result<EmuBuffer> {
            self.0.alloc(bytes)
        }
        fn region(buf: &EmuBuffer) -> Region {
            buf.region()
        }
        fn check_owned(&self, what: &'static str, r: Region) -> std::result::Result<(), oxccl::Error> {
            self.0.check_owned(what, r)
        }
        fn can_access(&self, _other: &Blind) -> bool {
            true
        }
        fn owns_stream(&self, stream: &BlindStream) -> bool {
            Arc::ptr_eq(stream.0.device(), &self.0)
        }
        fn stream_device(stream: &BlindStream) -> String {
            stream.0.device().name()
        }
        fn new_stream(self: &Arc<Self>) -> Result<BlindStream> {
            Ok(BlindStream(self.0.new_stream()))
        }
        fn upload(&self, buf: &EmuBuffer, host: &[u8]) -> Result<()> {
            buf.upload(host)
        }
        fn download(&self, buf: &EmuBuffer) -> Result<Vec<u8>> {
            Ok(buf.download())
        }
        fn peek(&self, word: Region) -> Result<u64> {
            self.0.peek(word)
        }
        fn release(&self, words: Region) -> Result<()> {
            for w in 0..words.len() / 8 {
                // SAFETY: `words` are an area's 8-byte-aligned words, live for the group.
                let word = unsafe { &*((words.addr() + 8 * w) as *const std::sync::atomic::AtomicU64) };
                word.store(u64::MAX, std::sync::atomic::Ordering::Release);
            }
            Ok(())
        }
    }
}

/// Three ranks on a device whose waits see only their word all-reduce
/// with ring, rank 2's stream held behind a gate (after every upload: an
/// upload waits for every stream) until `hold` returns on rank 2's thread,
/// its call enqueued meanwhile; then every rank waits for its stream and
/// runs `check`. Returns how long it all took.
fn blind_ring_with_rank_2_held(
    timeout: Duration,
    hold: impl Fn(&StreamComm<blind::Blind>, Instant) + Sync,
    check: impl Fn(&StreamComm<blind::Blind>) + Sync,
) -> Duration {
    let platform = EmuPlatform::new(1);
    let dev = Arc::new(blind::Blind(platform.device(0).unwrap()));
    let comms = StreamComm::local_group(&vec![dev.clone(); 3], Config { timeout, ..Config::default() }).unwrap();
    let gate = dev.0.alloc(8).unwrap();
    let uploaded = std::sync::Barrier::new(3);
    let started = Instant::now();
    std::thread::scope(|s| {
        for comm in comms {
            let (dev, gate, uploaded, hold, check) = (dev.clone(), &gate, &uploaded, &hold, &check);
            s.spawn(move || {
                let r = comm.rank();
                let stream = blind::BlindStream(dev.0.new_stream());
                let (send, recv) = (upload(&dev.0, &[1.0; 64]), upload(&dev.0, &[0.0; 64]));
                uploaded.wait();
                let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
                if r == 2 {
                    stream.0.wait_value(gate.region(), 1, "held".into(), held.clone()).unwrap();
                }
                let call = Call { algorithm: Some(Algorithm::Ring), ..sum_f32(64) };
                let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
                // SAFETY: the buffers live until the stream is waited for below.
                unsafe { comm.enqueue(&call, bufs, &stream) }.unwrap();
                if r == 2 {
                    hold(&comm, started);
                    held.store(true, std::sync::atomic::Ordering::Release);
                }
                let _ = stream.0.synchronize();
                check(&comm);
            });
        }
    });
    started.elapsed()
}

/// On a device whose waits see only their word (a GPU's), the
/// communicator's watchdog releases the waiting streams when another rank
/// aborts the group: no stream waits forever.
#[test]
fn the_watchdog_releases_blind_waits_on_abort() {
    let took = blind_ring_with_rank_2_held(
        Duration::from_secs(60),
        |comm, _| {
            std::thread::sleep(Duration::from_millis(200));
            comm.communicator().abort("test");
        },
        |comm| assert!(comm.async_error().is_some(), "rank {}", comm.rank()),
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// On a device whose waits see only their word (a GPU's), a wait for a
/// live peer that never comes gives up after the communicator's timeout
/// and says so in its rank's fault word; the watchdog turns that into the
/// group's timeout error, naming the peer, and releases every wait. Rank 2
/// is the peer that is alive but never comes: its work waits behind the
/// gate until the group has failed.
#[test]
fn the_watchdog_reports_a_blind_wait_that_timed_out() {
    let took = blind_ring_with_rank_2_held(
        Duration::from_secs(1),
        |comm, started| {
            while comm.async_error().is_none() && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(10));
            }
        },
        |comm| {
            let (r, err) = (comm.rank(), comm.async_error().expect("the group failed"));
            assert!(matches!(err, oxccl::Error::Timeout { .. }), "rank {r}: {err}");
            assert!(err.to_string().contains("timed out"), "rank {r}: {err}");
        },
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}
