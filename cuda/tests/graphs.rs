//! Stream-ordered calls captured into a graph and replayed (as a training
//! step with its all-reduce is captured into a CUDA graph): each replay
//! runs the same stream work again on fresh inputs and must give fresh,
//! correct results — the signals are relative to a device-side epoch, so
//! nothing captured goes stale. Replays mixed with calls enqueued
//! directly, and a rank's calls spread over several streams, stay in step.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use oxccl::{Algorithm, Call, Collective, Config, DType, ReduceOp, Regions};
use oxccl_cuda::streamed::backend::DeviceQueue;
use oxccl_cuda::{EmuBuffer, EmuDevice, EmuPlatform, EmuStream, StreamComm};

mod common;
use common::{floats, upload, value};

/// Rank `r`'s input element `i` in round `round`: small integers, so every
/// sum is exact.
fn input(r: usize, i: usize, round: usize) -> f32 {
    value(r, i) + round as f32
}

fn expected_sum(n: usize, count: usize, round: usize) -> Vec<f32> {
    (0..count).map(|i| (0..n).map(|r| input(r, i, round)).sum()).collect()
}

/// The step a rank captures: an all-reduce of `send` into `recv`, then a
/// broadcast of `recv` from rank 0 in place (which leaves it as it is):
/// two calls, so the epoch advances inside the graph too.
fn enqueue_step(
    comm: &StreamComm,
    algo: Algorithm,
    send: &EmuBuffer,
    recv: &EmuBuffer,
    count: usize,
    stream: &EmuStream,
) {
    let all_reduce = Call {
        collective: Collective::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count,
        root: 0,
        algorithm: Some(algo),
    };
    let broadcast = Call { collective: Collective::Broadcast, ..all_reduce };
    // SAFETY: the buffers outlive the stream's work (the test waits for it before dropping them).
    unsafe {
        comm.enqueue(&all_reduce, Regions::OutOfPlace { send: send.region(), recv: recv.region() }, stream).unwrap();
        comm.enqueue(&broadcast, Regions::InPlace(recv.region()), stream).unwrap();
    }
}

/// Every rank runs the step once directly (which sizes the rank's device
/// memory, as a warm-up before capture does on a GPU), captures it, then
/// replays it for several rounds of fresh inputs — one round enqueued
/// directly instead — checking every round's output.
fn replays(algo: Algorithm, n: usize, count: usize) {
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let config = Config { device_slice_bytes: 1024, timeout: Duration::from_secs(60), ..Config::default() };
    let comms = StreamComm::local_group(&vec![dev.clone(); n], config).unwrap();
    let all = Barrier::new(n);
    std::thread::scope(|s| {
        for comm in comms {
            let (dev, all): (Arc<EmuDevice>, _) = (dev.clone(), &all);
            s.spawn(move || {
                let r = comm.rank();
                let stream = dev.new_stream();
                let send = upload(&dev, &vec![0.0; count.max(1)]);
                let recv = upload(&dev, &vec![0.0; count.max(1)]);
                let check = |round: usize, how: &str| {
                    let got = &floats(&recv)[..count];
                    assert_eq!(
                        got,
                        &expected_sum(n, count, round)[..],
                        "{algo} on {n} ranks, rank {r}, round {round} ({how})"
                    );
                };
                let round = |k: usize, run: &dyn Fn()| {
                    // Every peer is done with the last round (direct reads peers' inputs) before
                    // any input changes, and every input is in place before any rank starts.
                    all.wait();
                    send.upload(bytemuck::cast_slice(&(0..count).map(|i| input(r, i, k)).collect::<Vec<_>>())).unwrap();
                    all.wait();
                    run();
                    stream.synchronize().unwrap_or_else(|e| panic!("rank {r}: {e}; group: {:?}", comm.async_error()));
                };
                round(0, &|| enqueue_step(&comm, algo, &send, &recv, count, &stream));
                check(0, "enqueued directly");
                DeviceQueue::begin_capture(&stream).unwrap();
                enqueue_step(&comm, algo, &send, &recv, count, &stream);
                let graph = DeviceQueue::end_capture(&stream).unwrap();
                assert!(!graph.is_empty());
                for k in 1..=4 {
                    if k == 3 {
                        round(k, &|| enqueue_step(&comm, algo, &send, &recv, count, &stream));
                        check(k, "enqueued directly between replays");
                    } else {
                        // Replays back to back: each sees its own epoch.
                        round(k, &|| (0..k).for_each(|_| stream.launch_graph(&graph).unwrap()));
                        check(k, "graph replays");
                    }
                }
                assert!(comm.async_error().is_none());
            });
        }
    });
}

#[test]
fn a_captured_direct_step_replays_with_fresh_results() {
    replays(Algorithm::Direct, 3, 1031);
}

/// Ring at 1031 floats over 3 ranks: several messages a step, so the
/// inbox's slots wrap within a call.
#[test]
fn a_captured_ring_step_replays_with_fresh_results() {
    replays(Algorithm::Ring, 3, 1031);
    replays(Algorithm::Ring, 2, 1);
}

#[test]
fn a_captured_tree_step_replays_with_fresh_results() {
    replays(Algorithm::Tree, 4, 13);
}

/// A stream being captured cannot be waited for (as on a GPU), and a graph
/// launches only on its own device.
#[test]
fn capture_misuse_is_an_error() {
    let platform = EmuPlatform::new(2);
    let (a, b) = (platform.device(0).unwrap(), platform.device(1).unwrap());
    let stream = a.new_stream();
    stream.begin_capture().unwrap();
    assert!(stream.begin_capture().is_err());
    assert!(stream.synchronize().is_err());
    let graph = stream.end_capture().unwrap();
    assert!(stream.end_capture().is_err());
    assert!(graph.launch(&b.new_stream()).unwrap_err().to_string().contains("emu:0"));
    graph.launch(&a.new_stream()).unwrap();
}

/// A rank's calls alternate between two streams of its device, enqueued
/// back to back without waiting: each call is ordered after the rank's
/// previous one (an event between the streams), so every result is right.
#[test]
fn calls_on_alternating_streams_stay_in_order() {
    let n = 3;
    let count = 1031;
    let platform = EmuPlatform::new(1);
    let dev = platform.device(0).unwrap();
    let config = Config { device_slice_bytes: 1024, timeout: Duration::from_secs(60), ..Config::default() };
    let comms = StreamComm::local_group(&vec![dev.clone(); n], config).unwrap();
    std::thread::scope(|s| {
        for comm in comms {
            let dev = dev.clone();
            s.spawn(move || {
                let r = comm.rank();
                let streams = [dev.new_stream(), dev.new_stream()];
                let send = upload(&dev, &(0..count).map(|i| input(r, i, 0)).collect::<Vec<_>>());
                let recvs: Vec<_> = (0..6).map(|_| upload(&dev, &vec![0.0; count])).collect();
                let mut call = Call {
                    collective: Collective::AllReduce,
                    dtype: DType::F32,
                    op: ReduceOp::Sum,
                    count,
                    root: 0,
                    algorithm: Some(Algorithm::Ring),
                };
                for (k, recv) in recvs.iter().enumerate() {
                    call.algorithm = Some(if k % 3 == 2 { Algorithm::Direct } else { Algorithm::Ring });
                    let bufs = Regions::OutOfPlace { send: send.region(), recv: recv.region() };
                    // SAFETY: the buffers outlive the streams' work (waited for below).
                    unsafe { comm.enqueue(&call, bufs, &streams[k % 2]) }.unwrap();
                }
                for s in &streams {
                    s.synchronize().unwrap_or_else(|e| panic!("rank {r}: {e}; group: {:?}", comm.async_error()));
                }
                for (k, recv) in recvs.iter().enumerate() {
                    assert_eq!(floats(recv), expected_sum(n, count, 0), "rank {r}, call {k}");
                }
            });
        }
    });
}
