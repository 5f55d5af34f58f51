//! Collectives on emulated device memory through the same schedules and
//! executor as host memory (`Communicator::run_in` with an `EmuSpace` per
//! rank): ranks as threads of one process, on one emulated device or
//! spread over several with peer access, every collective and algorithm
//! (direct reaching peers' device buffers, the others staging through the
//! transport's host slots) at awkward counts, in and out of place, checked
//! element by element against a sequential reduction on the host.

use oxccl::mem::Region;
use oxccl::{Algorithm, Call, Collective, Communicator, Config, DType, ReduceOp, Regions};
use oxccl_cuda::{EmuPlatform, EmuSpace};

mod common;
use common::{expected, floats, sum_f32, upload, value};

/// Runs `c` on `n` ranks spread over `platform`'s devices, out of place or
/// in place, and checks every rank's output.
fn check(platform: &EmuPlatform, algo: Algorithm, c: Collective, op: ReduceOp, n: usize, count: usize, in_place: bool) {
    let root = n / 2;
    // Small slices, so that the staged algorithms cut messages at small counts.
    let comms = Communicator::local_group_with(n, Config { slice_bytes: 1024, ..Config::default() }).unwrap();
    std::thread::scope(|s| {
        for comm in comms {
            let dev = platform.device(comm.rank() % platform.count()).unwrap();
            s.spawn(move || {
                let r = comm.rank();
                let space = EmuSpace::new(dev.new_stream());
                let (in_len, out_len) = (c.input_len(n, count), c.output_len(n, count));
                let input: Vec<f32> = (0..in_len).map(|i| value(r, i)).collect();
                let call = Call { collective: c, dtype: DType::F32, op, count, root, algorithm: Some(algo) };
                let label = format!("{algo} {c} {op} of {count} on {n} ranks, in place {in_place}, rank {r}");
                let got = if in_place {
                    let (io, oo) = c.in_place_offsets(r, count);
                    let mut whole = vec![-99f32; c.in_place_len(n, count)];
                    whole[io..io + in_len].copy_from_slice(&input);
                    let buf = upload(&dev, &whole);
                    // SAFETY: `buf` is device memory of `space`'s device, alive for the call.
                    unsafe { comm.run_in(&space, &call, Regions::InPlace(buf.region())) }.expect(&label);
                    floats(&buf)[oo..oo + out_len].to_vec()
                } else {
                    let (send, recv) = (upload(&dev, &input), upload(&dev, &vec![-99f32; out_len]));
                    let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
                    // SAFETY: both are device memory of `space`'s device, alive for the call.
                    unsafe { comm.run_in(&space, &call, bufs) }.expect(&label);
                    floats(&recv)
                };
                match expected(c, op, n, r, count, root) {
                    Some(want) => assert_eq!(got, want, "{label}"),
                    None if !in_place => assert!(got.iter().all(|&x| x == -99.0), "{label}: output written"),
                    None => {}
                }
            });
        }
    });
}

const COUNTS: [usize; 6] = [0, 1, 7, 13, 1031, 40_009];

/// Every collective of `algo` on one emulated device, worlds 1-4.
fn every_collective(algo: Algorithm, counts: &[usize]) {
    let platform = EmuPlatform::new(1);
    for n in 1..=4 {
        for &count in counts {
            for c in [Collective::AllReduce, Collective::ReduceScatter, Collective::Reduce] {
                for op in [ReduceOp::Sum, ReduceOp::Max] {
                    check(&platform, algo, c, op, n, count, false);
                }
            }
            for c in [Collective::AllGather, Collective::Broadcast, Collective::AllToAll] {
                check(&platform, algo, c, ReduceOp::Sum, n, count, false);
            }
            for c in [Collective::AllReduce, Collective::ReduceScatter, Collective::AllGather, Collective::Broadcast] {
                check(&platform, algo, c, ReduceOp::Sum, n, count, true);
            }
        }
    }
}

#[test]
fn every_direct_collective_on_one_emulated_device() {
    every_collective(Algorithm::Direct, &COUNTS);
}

/// Counts for the algorithms that stage through slots of 1 KiB: 1031 and
/// 2053 floats take 5 and 9 messages.
const STAGED_COUNTS: [usize; 5] = [0, 1, 7, 1031, 2053];

#[test]
fn every_ring_collective_on_one_emulated_device() {
    every_collective(Algorithm::Ring, &STAGED_COUNTS);
}

#[test]
fn every_tree_collective_on_one_emulated_device() {
    every_collective(Algorithm::Tree, &STAGED_COUNTS);
}

#[test]
fn every_halving_doubling_collective_on_one_emulated_device() {
    every_collective(Algorithm::HalvingDoubling, &STAGED_COUNTS);
}

#[test]
fn ranks_on_several_devices_with_peer_access() {
    let platform = EmuPlatform::new(2);
    for n in [2, 3, 4] {
        for count in [1, 13, 2053] {
            check(&platform, Algorithm::Direct, Collective::AllReduce, ReduceOp::Prod, n, count, false);
            check(&platform, Algorithm::Direct, Collective::AllReduce, ReduceOp::Min, n, count, true);
            check(&platform, Algorithm::Direct, Collective::AllToAll, ReduceOp::Sum, n, count, false);
            check(&platform, Algorithm::Ring, Collective::AllReduce, ReduceOp::Sum, n, count, false);
        }
    }
}

/// Staging through host slots needs no peer access.
#[test]
fn ring_and_tree_run_without_peer_access() {
    let platform = EmuPlatform::with_peer_access(2, |_, _| false);
    for algo in [Algorithm::Ring, Algorithm::Tree] {
        check(&platform, algo, Collective::AllReduce, ReduceOp::Sum, 3, 1031, false);
        check(&platform, algo, Collective::Broadcast, ReduceOp::Sum, 3, 1031, true);
    }
}

/// Without peer access a rank's reducer cannot read a peer's buffer: an
/// error on every rank (the one refused, the others aborted), none hangs.
///
/// The buffers outlive every rank's call (a failing rank now waits until
/// no peer's direct steps touch its buffers, and freeing emulated device
/// memory waits for every stream; keeping them is belt and braces).
#[test]
fn without_peer_access_every_rank_gets_an_error() {
    let platform = EmuPlatform::with_peer_access(2, |_, _| false);
    let comms = Communicator::local_group(2).unwrap();
    let devs: Vec<_> = (0..2).map(|r| platform.device(r).unwrap()).collect();
    let bufs: Vec<_> = devs.iter().map(|d| (upload(d, &[1.0; 64]), upload(d, &[0.0; 64]))).collect();
    let errors: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let (dev, (send, recv)) = (&devs[comm.rank()], &bufs[comm.rank()]);
                s.spawn(move || {
                    let space = EmuSpace::new(dev.new_stream());
                    let call = sum_f32(64);
                    let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
                    // SAFETY: device memory of `space`'s device, alive until every rank has returned.
                    unsafe { comm.run_in(&space, &call, bufs) }.unwrap_err().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(errors.iter().any(|e| e.contains("cannot access device")), "{errors:?}");
}

/// A short buffer is an error before anything runs, and the next call
/// runs; avg divides on the device (its kernel), by ring and direct.
/// (Dtypes without a reducer kernel are refused by the stream itself:
/// `cuda/tests/emudev.rs`.)
#[test]
fn short_buffers_are_refused_and_avg_divides() {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let comms = Communicator::local_group(1).unwrap();
    let comm = &comms[0];
    let space = EmuSpace::new(dev.new_stream());
    let (send, recv) = (upload(&dev, &[1.0; 8]), upload(&dev, &[0.0; 8]));
    let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
    let call = sum_f32(8);
    // SAFETY: device memory of `space`'s device, alive for the calls.
    unsafe {
        let e = comm.run_in(&space, &Call { count: 9, ..call }, bufs).unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        comm.run_in(&space, &call, bufs).unwrap();
    }
    assert_eq!(floats(&recv), vec![1.0; 8]);
    let comms = Communicator::local_group(2).unwrap();
    std::thread::scope(|s| {
        for comm in comms {
            let dev = dev.clone();
            s.spawn(move || {
                let space = EmuSpace::new(dev.new_stream());
                let mine = 1.0 + 2.0 * comm.rank() as f32;
                for algo in [Algorithm::Ring, Algorithm::Direct] {
                    let (send, recv) = (upload(&dev, &[mine; 8]), upload(&dev, &[0.0; 8]));
                    let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
                    let avg = Call { op: ReduceOp::Avg, algorithm: Some(algo), ..call };
                    // SAFETY: as above.
                    unsafe { comm.run_in(&space, &avg, bufs) }.unwrap();
                    assert_eq!(floats(&recv), vec![2.0; 8], "{algo}");
                }
            });
        }
    });
}

/// Host memory where device memory is expected, or another device's buffer,
/// is an error before anything is issued: the communicator is not aborted
/// and the next call runs.
#[test]
fn buffers_outside_the_ranks_device_are_refused_first() {
    let platform = EmuPlatform::new(2);
    let (dev, other) = (platform.device(0).unwrap(), platform.device(1).unwrap());
    let comms = Communicator::local_group(1).unwrap();
    let comm = &comms[0];
    let space = EmuSpace::new(dev.new_stream());
    let (send, recv, elsewhere) = (upload(&dev, &[2.0; 8]), upload(&dev, &[0.0; 8]), upload(&other, &[0.0; 8]));
    let mut host = vec![0f32; 8];
    let host = Region::of_mut(bytemuck::cast_slice_mut(&mut host));
    let call = sum_f32(8);
    let run = |send: Region, recv: Region| {
        // SAFETY: the device buffers live for the call; the host and foreign ones are refused
        // before anything is issued.
        unsafe { comm.run_in(&space, &call, Regions::OutOfPlace { send, recv }) }
    };
    let e = run(host, recv.region()).unwrap_err().to_string();
    assert!(e.contains("send buffer") && e.contains("not device memory"), "{e}");
    let e = run(send.region(), elsewhere.region()).unwrap_err().to_string();
    assert!(e.contains("receive buffer") && e.contains("device 1's memory"), "{e}");
    run(send.region(), recv.region()).unwrap();
    assert_eq!(floats(&recv), vec![2.0; 8]);
}
