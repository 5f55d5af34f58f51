//! The communicator on in-process ranks: every collective × algorithm ×
//! world size × awkward count × placement against a sequential reduction in
//! f64, on fresh random inputs; then every error path.

use std::time::{Duration, Instant};

use oxccl::{Algorithm, Collective, Communicator, Config, DType, Error, ErrorKind, ReduceOp};
use oxccl_testkit::checks::{mismatch_is_reported, send_recv_ring, MISMATCH_FIELDS};
use oxccl_testkit::grid::{Buffers, Cell, Grid};
use oxccl_testkit::on_ranks as on_group;

/// Runs `f` on every rank of a fresh local group, one thread per rank.
fn on_ranks<R: Send>(n: usize, config: Config, f: impl Fn(&Communicator) -> R + Sync) -> Vec<R> {
    on_group(&mut local(n, config), f)
}

fn config(slice_bytes: usize) -> Config {
    Config { timeout: Duration::from_secs(20), slice_bytes, algorithm: None, ..Config::default() }
}

/// A local group of `n` ranks.
fn local(n: usize, config: Config) -> Vec<Communicator> {
    Communicator::local_group_with(n, config).expect("group")
}

/// One call on a fresh group of `n` ranks with `slice`-byte slices.
fn check(cell: Cell, n: usize, slice: usize) {
    Grid::new().cell(cell).run([n], |n| local(n, config(slice)));
}

const WORLDS: [usize; 6] = [1, 2, 3, 4, 5, 7];
const COUNTS: [usize; 6] = [0, 1, 2, 7, 31, 1000];

fn grid(algo: Algorithm) {
    let a = Some(algo);
    // A tiny slice forces the multi-slice paths.
    Grid::new()
        .every_collective(a, DType::F32, ReduceOp::Sum, &COUNTS, Buffers::Heap)
        .run(WORLDS, |n| local(n, config(64)));
    Grid::new()
        .every_collective(a, DType::I64, ReduceOp::Max, &COUNTS, Buffers::Heap)
        .run(WORLDS, |n| local(n, config(128 << 10)));
    for op in ReduceOp::ALL {
        check(Cell::new(Collective::AllReduce, algo, DType::I32, op, 97, false), 5, 64);
        check(Cell::new(Collective::AllReduce, algo, DType::U8, op, 31, true), 3, 64);
        check(Cell::new(Collective::ReduceScatter, algo, DType::F64, op, 13, false), 4, 64);
    }
    for n in [2, 3, 6] {
        check(Cell::new(Collective::AllReduce, algo, DType::F16, ReduceOp::Sum, 1003, false), n, 256);
        check(Cell::new(Collective::AllReduce, algo, DType::BF16, ReduceOp::Avg, 1003, true), n, 256);
        check(Cell::new(Collective::Reduce, algo, DType::I8, ReduceOp::Min, 100, false), n, 64);
        check(Cell::new(Collective::AllReduce, algo, DType::U32, ReduceOp::Sum, 100_003, false), n, 4096);
        check(Cell::new(Collective::AllToAll, algo, DType::U64, ReduceOp::Sum, 5, true), n, 64);
    }
}

#[test]
fn direct_every_collective() {
    grid(Algorithm::Direct);
}
#[test]
fn ring_every_collective() {
    grid(Algorithm::Ring);
}
#[test]
fn tree_every_collective() {
    grid(Algorithm::Tree);
}
#[test]
fn rhd_every_collective() {
    grid(Algorithm::HalvingDoubling);
}

#[test]
fn generic_api_and_auto() {
    let outs = on_ranks(3, config(1024), |c| {
        let r = c.rank() as f32;
        let mut out = vec![0f32; 5];
        c.all_reduce(&[r; 5], &mut out, ReduceOp::Sum).unwrap();
        let mut g = vec![0f32; 6];
        c.all_gather(&[r, r], &mut g).unwrap();
        let mut b = vec![r; 4];
        c.broadcast_in_place(&mut b, 2).unwrap();
        let mut rs = vec![1i32; 6];
        c.reduce_scatter_in_place(&mut rs, ReduceOp::Sum).unwrap();
        let mut a2a = vec![c.rank() as u64; 3];
        c.all_to_all_in_place(&mut a2a).unwrap();
        c.barrier().unwrap();
        (out, g, b, rs[c.rank() * 2..c.rank() * 2 + 2].to_vec(), a2a)
    });
    for (out, g, b, rs, a2a) in outs {
        assert_eq!(out, vec![3.0; 5]);
        assert_eq!(g, vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(b, vec![2.0; 4]);
        assert_eq!(rs, vec![3, 3]);
        assert_eq!(a2a, vec![0, 1, 2]);
    }
}

#[test]
fn send_recv() {
    for len in [0usize, 1, 1000, 70_001] {
        send_recv_ring(&mut local(3, config(4096)), len);
    }
}

fn err_of<T>(r: &oxccl::Result<T>) -> &Error {
    r.as_ref().err().expect("an error")
}

#[test]
fn zero_ranks() {
    assert_eq!(Communicator::local_group(0).err(), Some(Error::ZeroRanks));
}

#[test]
fn buffer_too_small_and_rank_out_of_range() {
    let outs = on_ranks(2, config(1024), |c| {
        let small = c.all_gather(&[1f32; 4], &mut [0f32; 7]);
        let root = c.broadcast_in_place(&mut [0u8; 3], 2);
        let peer = c.send(&[1u8], 5);
        let me = c.send(&[1u8], c.rank());
        let uneven = c.all_to_all_in_place(&mut [0u8; 3]);
        // Nothing was lost: the group still works.
        let mut v = [c.rank() as i32 + 1];
        c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        (small, root, peer, me, uneven, v[0])
    });
    for (small, root, peer, me, uneven, v) in outs {
        assert_eq!(err_of(&small), &Error::BufferTooSmall { what: "receive buffer", need: 8, got: 7 });
        assert_eq!(err_of(&root), &Error::RankOutOfRange { rank: 2, world: 2 });
        assert_eq!(err_of(&peer), &Error::RankOutOfRange { rank: 5, world: 2 });
        assert_eq!(err_of(&me).kind(), ErrorKind::InvalidArgument);
        assert_eq!(err_of(&uneven).kind(), ErrorKind::InvalidArgument);
        assert_eq!(v, 3);
    }
}

#[test]
fn mismatch_is_reported_with_both_values() {
    for field in MISMATCH_FIELDS {
        mismatch_is_reported(&mut local(3, config(1024)), field);
    }
}

#[test]
fn timeout_names_call_and_peer() {
    let cfg = Config { timeout: Duration::from_millis(300), ..config(1024) };
    let start = Instant::now();
    let outs = on_ranks(3, cfg, |c| {
        if c.rank() == 1 {
            return Ok(()); // never joins
        }
        c.all_reduce_in_place(&mut [1f32; 8], ReduceOp::Sum)
    });
    assert!(start.elapsed() < Duration::from_secs(5));
    let timeouts: Vec<_> = outs.iter().filter(|r| matches!(r, Err(Error::Timeout { .. }))).collect();
    assert!(!timeouts.is_empty(), "{outs:?}");
    for r in &outs {
        match r {
            Err(Error::Timeout { call, peer, .. }) => {
                assert_eq!(call.as_deref(), Some("all_reduce #1"));
                assert_eq!(*peer, 1);
            }
            Err(Error::Aborted(why)) => assert!(why.contains("timed out"), "{why}"),
            Ok(()) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Ranks wait on each other in chains (in a ring of 4, rank 3 waits for 2,
/// which waits for the absent rank 1): whatever the algorithm, every rank
/// that times out follows who waits for whom and names the absent rank, and
/// the others report its timeout.
#[test]
fn timeout_names_the_rank_at_the_end_of_the_chain() {
    for algorithm in Algorithm::ALL {
        for absent in [0, 1, 3] {
            let cfg = Config { timeout: Duration::from_millis(400), algorithm: Some(algorithm), ..config(256) };
            let outs = on_ranks(4, cfg, |c| {
                if c.rank() == absent {
                    return Ok(());
                }
                c.all_reduce_in_place(&mut [1f32; 1000], ReduceOp::Sum)
            });
            for (r, out) in outs.iter().enumerate().filter(|&(r, _)| r != absent) {
                match out {
                    Err(Error::Timeout { peer, .. }) => assert_eq!(*peer, absent, "{algorithm}, rank {r}: {out:?}"),
                    Err(Error::Aborted(why)) => {
                        assert!(why.contains(&format!("waiting for rank {absent} ")), "{algorithm}, rank {r}: {why}")
                    }
                    other => panic!("{algorithm}, rank {r}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn abort_unblocks_waiting_ranks() {
    let mut comms = Communicator::local_group_with(3, config(1024)).unwrap();
    let last = comms.pop().unwrap();
    let handle = comms[0].abort_handle();
    let start = Instant::now();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> =
            comms.into_iter().map(|c| s.spawn(move || c.all_reduce_in_place(&mut [1f32; 8], ReduceOp::Sum))).collect();
        std::thread::sleep(Duration::from_millis(100));
        handle.abort("test abort");
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(start.elapsed() < Duration::from_secs(5));
    for r in outs {
        assert_eq!(r, Err(Error::Aborted("test abort".into())));
    }
    // Later calls fail the same way, at once.
    assert_eq!(last.barrier(), Err(Error::Aborted("test abort".into())));
}

#[test]
fn p2p_length_mismatch() {
    let outs =
        on_ranks(2, config(1024), |c| if c.rank() == 0 { c.send(&[1f32; 10], 1) } else { c.recv(&mut [0f32; 12], 0) });
    assert!(matches!(&outs[1], Err(Error::Mismatch { field: "bytes", .. })), "{outs:?}");
}
