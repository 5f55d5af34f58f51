//! The shared-memory transport, with ranks as threads that each map the
//! others' segments as separate processes would: the test kit's grid
//! (every collective × algorithm × count × placement against the sequential
//! reference) with buffers in and out of the shared pool, abort, and no
//! names left in /dev/shm.

use std::sync::Arc;
use std::time::Duration;

use oxccl::transport::shm::{segment, ShmConfig, ShmSetup};
use oxccl::transport::Transport;
use oxccl::{Algorithm, Bytes, Call, Collective, Communicator, Config, DType, Error, ReduceOp};
use oxccl_testkit::grid::{Buffers, Cell, Grid};
use oxccl_testkit::on_ranks;

fn config() -> Config {
    Config { timeout: Duration::from_secs(20), slice_bytes: 256, algorithm: None, ..Config::default() }
}

fn shm_config() -> ShmConfig {
    ShmConfig { pool_bytes: 64 << 20, ..ShmConfig::new(256, Duration::from_secs(20)) }
}

/// A group of `n` communicators over the shared-memory transport, each rank
/// mapping the others' segments as separate processes would.
fn shm_group(n: usize) -> Vec<Communicator> {
    let setups: Vec<ShmSetup> = (0..n).map(|r| ShmSetup::create(r, n, shm_config()).expect("segments")).collect();
    let names: Vec<String> = setups.iter().map(|s| s.name().to_string()).collect();
    std::thread::scope(|s| {
        let hs: Vec<_> = setups
            .into_iter()
            .enumerate()
            .map(|(r, setup)| {
                let names = &names;
                s.spawn(move || {
                    let t: Arc<dyn Transport> = Arc::new(setup.connect(names).expect("connect"));
                    Communicator::from_transport(r, t, config()).expect("communicator")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("rank panicked")).collect()
    })
}

/// Runs `f` on every rank of a fresh shm group, one thread each.
fn on_shm_ranks<R: Send>(n: usize, f: impl Fn(&Communicator) -> R + Sync) -> Vec<R> {
    on_ranks(&mut shm_group(n), f)
}

fn leftovers() -> usize {
    let prefix = format!("{}{}-", segment::PREFIX, std::process::id());
    std::fs::read_dir(segment::dir())
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).count())
        .unwrap_or(0)
}

const COUNTS: [usize; 5] = [0, 1, 7, 100, 1001];

/// Every algorithm × collective × count × placement, f32 sum, with buffers
/// from the heap and from the shared pool; the direct algorithm reads peers'
/// buffers, so with more than one rank it runs on pool buffers only (heap
/// buffers are refused, tested below), its barrier aside.
#[test]
fn every_collective_and_algorithm_with_ordinary_and_pool_buffers() {
    for n in [1, 2, 3, 4] {
        let mut grid = Grid::new();
        for algo in Algorithm::ALL {
            for buffers in [Buffers::Heap, Buffers::Shared] {
                if algo == Algorithm::Direct && buffers == Buffers::Heap && n > 1 {
                    for count in COUNTS {
                        for in_place in [false, true] {
                            let barrier =
                                Cell::new(Collective::Barrier, algo, DType::F32, ReduceOp::Sum, count, in_place);
                            grid = grid.cell(barrier);
                        }
                    }
                    continue;
                }
                grid = grid.every_collective(Some(algo), DType::F32, ReduceOp::Sum, &COUNTS, buffers);
            }
        }
        grid.run([n], shm_group);
    }
    assert_eq!(leftovers(), 0, "segments left in /dev/shm");
}

#[test]
fn direct_refuses_buffers_outside_the_pool() {
    let outs = on_shm_ranks(2, |c| {
        let mut v = vec![1f32; 64];
        let call = Call {
            collective: Collective::AllReduce,
            dtype: DType::F32,
            op: ReduceOp::Sum,
            count: 64,
            root: 0,
            algorithm: Some(Algorithm::Direct),
        };
        c.run(&call, Bytes::InPlace(bytemuck::cast_slice_mut(&mut v)))
    });
    for o in outs {
        let e = o.expect_err("direct with heap buffers across processes");
        assert!(e.to_string().contains("alloc_shared") || matches!(e, Error::Aborted(_)), "{e}");
    }
}

#[test]
fn auto_uses_direct_for_pool_buffers_and_abort_reaches_everyone() {
    let outs = on_shm_ranks(3, |c| {
        let mut buf = c.alloc_shared::<f64>(1000).unwrap();
        buf.fill(c.rank() as f64);
        c.all_reduce_in_place(&mut buf, ReduceOp::Sum).unwrap();
        let call = Call {
            collective: Collective::AllReduce,
            dtype: DType::F64,
            op: ReduceOp::Sum,
            count: 1000,
            root: 0,
            algorithm: None,
        };
        let algo = c.algorithm_for(&call, true);
        let ok = buf.iter().all(|&v| v == 3.0);
        if c.rank() == 0 {
            std::thread::sleep(Duration::from_millis(100));
            c.abort("stop");
            return (ok, algo, Ok(()));
        }
        (ok, algo, c.all_reduce_in_place(&mut buf, ReduceOp::Sum))
    });
    for (ok, algo, r) in outs {
        assert!(ok);
        assert_eq!(algo, Algorithm::Direct);
        if let Err(e) = r {
            assert_eq!(e, Error::Aborted("stop".into()));
        }
    }
}
