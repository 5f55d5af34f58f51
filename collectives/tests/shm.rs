//! The shared-memory transport, with ranks as threads that each map the
//! others' segments as separate processes would: every collective ×
//! algorithm against the in-process results, buffers in and out of the
//! shared pool, abort, and no names left in /dev/shm.

use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use oxccl::transport::shm::{segment, ShmConfig, ShmSetup};
use oxccl::transport::Transport;
use oxccl::{Algorithm, Bytes, Call, Collective, Communicator, Config, DType, Error, ReduceOp};

fn config() -> Config {
    Config { timeout: Duration::from_secs(20), slice_bytes: 256, algorithm: None }
}

/// One communicator per thread over the shared-memory transport.
fn on_shm_ranks<R: Send>(n: usize, f: impl Fn(&Communicator) -> R + Sync) -> Vec<R> {
    let names = Mutex::new(vec![String::new(); n]);
    let gate = Barrier::new(n);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|r| {
                let (names, gate, f) = (&names, &gate, &f);
                s.spawn(move || {
                    let cfg = ShmConfig { pool_bytes: 64 << 20, ..ShmConfig::new(256, Duration::from_secs(20)) };
                    let setup = ShmSetup::create(r, n, cfg).expect("segments");
                    names.lock().unwrap()[r] = setup.name().to_string();
                    gate.wait();
                    let all = names.lock().unwrap().clone();
                    let t: Arc<dyn Transport> = Arc::new(setup.connect(&all).expect("connect"));
                    let comm = Communicator::from_transport(r, t, config()).expect("communicator");
                    f(&comm)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("rank panicked")).collect()
    })
}

fn leftovers() -> usize {
    let prefix = format!("{}{}-", segment::PREFIX, std::process::id());
    std::fs::read_dir(segment::dir())
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).count())
        .unwrap_or(0)
}

fn value(rank: usize, i: usize) -> f32 {
    ((rank * 7 + i * 3) % 23) as f32 - 11.0
}

#[test]
fn every_collective_and_algorithm_with_ordinary_and_pool_buffers() {
    for n in [1, 2, 3, 4] {
        let outs = on_shm_ranks(n, |c| {
            let r = c.rank();
            let mut wrong = Vec::new();
            for algo in Algorithm::ALL {
                for coll in Collective::ALL {
                    for count in [0usize, 1, 7, 100, 1001] {
                        for pool in [false, true] {
                            if algo == Algorithm::Direct && !pool && n > 1 && coll != Collective::Barrier {
                                continue; // needs shared buffers, tested below
                            }
                            let root = (count + 1) % n;
                            let (il, ol) = (coll.input_len(n, count), coll.output_len(n, count));
                            let input: Vec<f32> = (0..il).map(|i| value(r, i)).collect();
                            let call = Call {
                                collective: coll,
                                dtype: DType::F32,
                                op: ReduceOp::Sum,
                                count,
                                root,
                                algorithm: Some(algo),
                            };
                            let got: Vec<f32> = if pool {
                                let mut send = c.alloc_shared::<f32>(il).unwrap();
                                send.copy_from_slice(&input);
                                let mut recv = c.alloc_shared::<f32>(ol).unwrap();
                                recv.fill(-99.0);
                                c.run(
                                    &call,
                                    Bytes::OutOfPlace {
                                        send: bytemuck::cast_slice(&send),
                                        recv: bytemuck::cast_slice_mut(&mut recv),
                                    },
                                )
                                .unwrap();
                                recv.to_vec()
                            } else {
                                let mut recv = vec![-99.0f32; ol];
                                c.run(
                                    &call,
                                    Bytes::OutOfPlace {
                                        send: bytemuck::cast_slice(&input),
                                        recv: bytemuck::cast_slice_mut(&mut recv),
                                    },
                                )
                                .unwrap();
                                recv
                            };
                            let want: Vec<f32> = (0..ol)
                                .map(|j| match coll {
                                    Collective::AllReduce => (0..n).map(|p| value(p, j)).sum(),
                                    Collective::ReduceScatter => (0..n).map(|p| value(p, r * count + j)).sum(),
                                    Collective::AllGather => value(j / count, j % count),
                                    Collective::Broadcast => value(root, j),
                                    Collective::Reduce if r == root => (0..n).map(|p| value(p, j)).sum(),
                                    Collective::Reduce => -99.0,
                                    Collective::AllToAll => value(j / count, r * count + j % count),
                                    Collective::Barrier => 0.0,
                                })
                                .collect();
                            if got != want {
                                wrong.push(format!("{algo} {coll} n={n} count={count} pool={pool}"));
                            }
                        }
                    }
                }
            }
            wrong
        });
        let wrong: Vec<String> = outs.into_iter().flatten().collect();
        assert!(wrong.is_empty(), "{wrong:?}");
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
