//! Behaviours every transport must show, checked the same way on each.

use std::time::{Duration, Instant};

use oxccl::{Algorithm, Bytes, Call, Collective, Communicator, DType, Error, ReduceOp};

use crate::group::on_ranks;

/// Point to point around the ring of `comms` (at least 2 ranks): rank 0
/// sends `len` f64 to rank 1 and receives from the last rank; every other
/// rank receives from the previous one and passes it on. Every rank must
/// end with rank 0's data.
pub fn send_recv_ring(comms: &mut Vec<Communicator>, len: usize) {
    let outs = on_ranks(comms, |c| {
        let (n, r) = (c.world(), c.rank());
        let data: Vec<f64> = (0..len).map(|i| (i * 10 + r) as f64).collect();
        let mut got = vec![-1.0; len];
        let (next, prev) = ((r + 1) % n, (r + n - 1) % n);
        if r == 0 {
            c.send(&data, next).unwrap();
            c.recv(&mut got, prev).unwrap();
        } else {
            c.recv(&mut got, prev).unwrap();
            c.send(&got, next).unwrap();
        }
        got
    });
    for (r, got) in outs.iter().enumerate() {
        assert_eq!(got.len(), len);
        assert!(got.iter().enumerate().all(|(i, &v)| v == (i * 10) as f64), "len {len}: rank {r} got other data");
    }
}

/// The argument fields [`mismatch_is_reported`] can set apart.
pub const MISMATCH_FIELDS: [&str; 5] = ["count", "dtype", "reduction op", "root", "collective"];

/// Rank 2 of a fresh group of at least 3 (`comms`) makes its first call
/// differ from the others' in `field` (one of [`MISMATCH_FIELDS`]): every
/// rank's call fails, with a mismatch or the abort that follows one, and
/// every mismatch reported names `field`, the call (`#1`) and rank 2 (as
/// itself or as the peer), with two different values.
pub fn mismatch_is_reported(comms: &mut Vec<Communicator>, field: &str) {
    assert!(MISMATCH_FIELDS.contains(&field), "{field}");
    let outs = on_ranks(comms, |c| {
        let odd = c.rank() == 2;
        match field {
            "count" => c.all_reduce_in_place(&mut vec![1f32; if odd { 5 } else { 4 }], ReduceOp::Sum),
            "dtype" if odd => c.all_reduce_in_place(&mut [1f64; 4], ReduceOp::Sum),
            "dtype" => c.all_reduce_in_place(&mut [1f32; 4], ReduceOp::Sum),
            "reduction op" => c.all_reduce_in_place(&mut [1f32; 4], if odd { ReduceOp::Max } else { ReduceOp::Sum }),
            "root" => c.broadcast_in_place(&mut [1f32; 4], usize::from(odd)),
            _ if odd => c.barrier(),
            _ => c.all_reduce_in_place(&mut [1f32; 4], ReduceOp::Sum),
        }
    });
    let mut found = 0;
    for r in &outs {
        match r {
            Err(Error::Mismatch { field: f, rank, mine, peer, theirs, call }) => {
                found += 1;
                assert_eq!(*f, field, "{outs:?}");
                assert!(call.ends_with("#1"), "{call}");
                if !matches!(field, "root" | "collective") {
                    assert_eq!(call, "all_reduce #1");
                }
                assert_ne!(mine, theirs, "{outs:?}");
                assert!(*rank == 2 || *peer == 2, "{outs:?}");
            }
            Err(Error::Aborted(_)) => {}
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(found > 0, "{field}: no rank reported the mismatch: {outs:?}");
}

/// Ranks 0 and 1 of a group of three (`comms`) enter an all-reduce, and an
/// abort handle of rank 0 aborts the group `pause` later: both return the
/// abort, within `limit`; rank 2, which never joined, learns the cause over
/// the wire (`cause`: its transport's, looked at for up to `told_within`)
/// and its calls fail at once from then on.
pub fn abort_reaches_the_rank_that_never_joined(
    mut comms: Vec<Communicator>,
    cause: impl Fn() -> Option<Error>,
    pause: Duration,
    limit: Duration,
    told_within: Duration,
) {
    let last = comms.pop().expect("three ranks");
    let handle = comms[0].abort_handle();
    let start = Instant::now();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> =
            comms.into_iter().map(|c| s.spawn(move || c.all_reduce_in_place(&mut [1f32; 8], ReduceOp::Sum))).collect();
        std::thread::sleep(pause);
        handle.abort("test abort");
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(start.elapsed() < limit);
    for r in outs {
        assert_eq!(r, Err(Error::Aborted("test abort".into())));
    }
    let deadline = Instant::now() + told_within;
    while cause().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(cause(), Some(Error::Aborted("test abort".into())));
    assert_eq!(last.barrier(), Err(Error::Aborted("test abort".into())));
}

/// Over a transport without shared memory, a call naming the direct
/// algorithm fails with [`Error::NeedsSharedMemory`] and leaves the
/// communicator usable (it is checked before anything moves). Runs on one
/// rank; `Err` says what happened instead.
pub fn direct_is_refused(comm: &Communicator) -> Result<(), String> {
    let mut buf = vec![1f32; 16];
    let call = Call {
        collective: Collective::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count: 16,
        root: 0,
        algorithm: Some(Algorithm::Direct),
    };
    match comm.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(&mut buf))) {
        Err(Error::NeedsSharedMemory { .. }) => Ok(()),
        other => Err(format!("direct without shared memory: expected NeedsSharedMemory, got {other:?}")),
    }
}
