//! Every algorithm's schedules, run through the symbolic checker.
//!
//! Per algorithm (a module each, so `cargo test --test schedules ring` runs
//! one): a property test over random specs, and an exhaustive grid of small
//! ones. Then negative tests: hand-built broken schedules the checker must
//! reject, each for the reason it was broken.

use oxccl::schedule::{At, Direct, Loc, Peers, Schedule, Step, Xfer};
use oxccl::{Algorithm, Checker, Collective, Spec};
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// Counts that hit the edges: empty, below and around typical world sizes,
/// primes, powers of two and their neighbours.
const COUNTS: [usize; 12] = [0, 1, 2, 3, 5, 7, 13, 31, 64, 97, 100, 127];
const SLICES: [usize; 6] = [1, 2, 3, 7, 16, 1000];
/// Random cases per algorithm (`PROPTEST_CASES` overrides it for deeper
/// runs); the whole file stays well under a minute on two cores.
const CASES: u32 = 2000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok());
    ProptestConfig { cases: cases.unwrap_or(CASES), failure_persistence: None, ..ProptestConfig::default() }
}

fn check(spec: Spec, algo: Algorithm) -> Result<(), String> {
    Checker::check_algorithm(spec, algo).map_err(|e| format!("{algo} {spec:?}: {e}"))
}

fn spec(collective: Collective, world: usize, count: usize, root: usize, slice: usize, in_place: bool) -> Spec {
    Spec { collective, world, count, root, slice, in_place }
}

/// Random specs; the barrier's count is always 0.
fn specs() -> impl Strategy<Value = Spec> {
    let count = prop_oneof![select(COUNTS.to_vec()), 0..300usize];
    (select(Collective::ALL.to_vec()), 1..=17usize, count, select(SLICES.to_vec()), any::<bool>(), any::<Index>())
        .prop_map(|(c, world, count, slice, in_place, root)| {
            let root = if c.rooted() { root.index(world) } else { 0 };
            let count = if c == Collective::Barrier { 0 } else { count };
            spec(c, world, count, root, slice, in_place)
        })
}

/// Every small spec: world 1..=9, a few counts and slices, both placements,
/// every root of the rooted collectives. (The barrier's count is always 0.)
fn grid() -> impl Iterator<Item = Spec> {
    Collective::ALL.into_iter().flat_map(|c| {
        (1..=9).flat_map(move |world| {
            let roots = if c.rooted() { world } else { 1 };
            let counts: &[usize] = if c == Collective::Barrier { &[0] } else { &[0, 1, 2, 5, 9, 17] };
            (0..roots).flat_map(move |root| {
                counts.iter().flat_map(move |&count| {
                    [1, 4, 64].into_iter().flat_map(move |slice| {
                        [false, true].map(|in_place| spec(c, world, count, root, slice, in_place))
                    })
                })
            })
        })
    })
}

fn check_grid(algo: Algorithm) {
    let failures: Vec<String> = grid().filter_map(|s| check(s, algo).err()).collect();
    assert!(
        failures.is_empty(),
        "{} failures, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

macro_rules! algorithm_tests {
    ($($name:ident => $algo:expr),* $(,)?) => {$(
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(config())]
                #[test]
                fn random_specs(spec in specs()) {
                    if let Err(e) = check(spec, $algo) {
                        prop_assert!(false, "{}", e);
                    }
                }
            }

            #[test]
            fn small_grid() {
                check_grid($algo);
            }
        }
    )*};
}

algorithm_tests! {
    ring => Algorithm::Ring,
    tree => Algorithm::Tree,
    rhd => Algorithm::HalvingDoubling,
    direct => Algorithm::Direct,
}

/// The direct all-reduce reads every input element once and writes every
/// output element once: 2·world·count elements, the memory floor (small ones
/// take the eager path, which trades reads for a barrier).
#[test]
fn direct_all_reduce_moves_the_memory_floor() {
    let eager = |s: &Spec| s.count > 0 && s.count * s.world <= oxccl::algo::direct::EAGER_ELEMENTS.min(s.slice);
    for s in grid().filter(|s| s.collective == Collective::AllReduce && !eager(s)) {
        let moved: usize = (0..s.world)
            .flat_map(|r| Algorithm::Direct.schedule(&s, r).steps)
            .map(|st| match st {
                Step::Direct(d) => (d.srcs.len() + d.dsts.len()) * d.len,
                Step::Xfer(x) => panic!("{s:?}: direct all-reduce with an xfer {x:?}"),
                Step::Barrier => 0,
                Step::Inline(i) => panic!("{s:?}: inline step above the eager sizes {i:?}"),
            })
            .sum();
        assert_eq!(moved, 2 * s.world * s.count, "{s:?}");
    }
}

/// Small all-reduces take recursive doubling in `rhd`: correct for every
/// world 1..=17 (folds included) and count up to the threshold and just
/// past it, in and out of place, in `log2 p` exchanges (plus the fold's
/// two) rather than halving and doubling's `2 log2 p`.
#[test]
fn rhd_small_all_reduce_is_recursive_doubling() {
    use oxccl::algo::halving_doubling::DOUBLING_FRACTION;
    let slice = 64 * DOUBLING_FRACTION;
    for world in 1..=17 {
        for count in (0..=64).chain([65, 100]) {
            for in_place in [false, true] {
                let s = spec(Collective::AllReduce, world, count, 0, slice, in_place);
                check(s, Algorithm::HalvingDoubling).unwrap();
                if world < 2 || count == 0 || count > 64 {
                    continue;
                }
                let p = 1usize << world.ilog2();
                for r in 0..world {
                    let sends = Algorithm::HalvingDoubling
                        .schedule(&s, r)
                        .steps
                        .iter()
                        .filter(|st| matches!(st, Step::Xfer(x) if !x.send.is_empty()))
                        .count();
                    // Folded ranks send once; a host also returns the result to its guest.
                    let folded = r < 2 * (world - p) && r % 2 == 0;
                    let host = r < 2 * (world - p) && r % 2 == 1;
                    let expected = if folded { 1 } else { p.ilog2() as usize + usize::from(host) };
                    assert_eq!(sends, expected, "{s:?} rank {r}");
                }
            }
        }
    }
}

/// Negative tests: each builds a broken schedule by hand and expects the
/// checker to name what is broken.
mod rejects {
    use super::*;

    fn reject(s: Spec, scheds: &[Schedule], why: &str) {
        match Checker::new(s).check(scheds) {
            Ok(()) => panic!("accepted a schedule that should fail with '{why}'"),
            Err(e) => assert!(e.to_string().contains(why), "expected '{why}', got: {e}"),
        }
    }

    fn accept(s: Spec, scheds: &[Schedule]) {
        if let Err(e) = Checker::new(s).check(scheds) {
            panic!("rejected a correct schedule: {e}");
        }
    }

    fn sched(f: impl FnOnce(&mut Schedule)) -> Schedule {
        let mut s = Schedule::new();
        f(&mut s);
        s
    }

    /// All-reduce of one element between two ranks, correct: rank 0 sends,
    /// rank 1 completes the sum and sends it back. The tests below break it.
    fn two_rank_all_reduce() -> Vec<Schedule> {
        vec![
            sched(|s| {
                s.send(1, Loc::input(0), 1).recv(1, Loc::output(0), 1);
            }),
            sched(|s| {
                s.recv_reduce_copy_send(0, Loc::input(0), Loc::output(0), 0, 1);
            }),
        ]
    }

    const AR2: Spec =
        Spec { collective: Collective::AllReduce, world: 2, count: 1, root: 0, slice: 1, in_place: false };

    #[test]
    fn the_reference_schedule_is_accepted() {
        accept(AR2, &two_rank_all_reduce());
        accept(Spec { in_place: true, ..AR2 }, &two_rank_all_reduce());
    }

    #[test]
    fn double_counting() {
        // Rank 1 adds rank 0's contribution twice.
        let scheds = vec![
            sched(|s| {
                s.send(1, Loc::input(0), 1).send(1, Loc::input(0), 1);
            }),
            sched(|s| {
                s.recv_reduce_copy(0, Loc::input(0), Loc::output(0), 1, false);
                s.recv_reduce_copy(0, Loc::output(0), Loc::output(0), 1, false);
            }),
        ];
        reject(AR2, &scheds, "counts ranks [0] twice");
    }

    #[test]
    fn deadlock_when_both_receive_first() {
        let scheds = vec![
            sched(|s| {
                s.recv(1, Loc::output(0), 1).send(1, Loc::input(0), 1);
            }),
            sched(|s| {
                s.recv(0, Loc::output(0), 1).send(0, Loc::input(0), 1);
            }),
        ];
        reject(Spec { collective: Collective::AllGather, ..AR2 }, &scheds, "deadlock");
    }

    #[test]
    fn deadlock_when_sends_outrun_the_slots() {
        // Both send three messages before receiving: stuck with the two
        // slots the checker (and every transport) guarantees.
        let both = |peer| {
            sched(|s| {
                s.send(peer, Loc::input(0), 1).send(peer, Loc::input(1), 1).send(peer, Loc::input(2), 1);
                s.recv(peer, Loc::output(0), 1).recv(peer, Loc::output(1), 1).recv(peer, Loc::output(2), 1);
            })
        };
        let s = Spec { collective: Collective::AllToAll, count: 3, slice: 1, ..AR2 };
        reject(s, &[both(1), both(0)], "deadlock");
    }

    #[test]
    fn fused_ring_needs_two_slots() {
        // NCCL's ring reduce-scatter: every rank sends first, then receives,
        // reduces and sends in one step. With one slot the sends fill every
        // channel and no fused step can fire; two suffice (oxccl::checker::MIN_SLOTS).
        let s = Spec { collective: Collective::ReduceScatter, world: 3, ..AR2 };
        let scheds: Vec<Schedule> = (0..3)
            .map(|r| {
                let (next, prev) = ((r + 1) % 3, (r + 2) % 3);
                sched(|s| {
                    s.send(next, Loc::input(prev), 1)
                        .recv_reduce_send(prev, Loc::input(next), next, 1)
                        .recv_reduce_copy(prev, Loc::input(r), Loc::output(0), 1, true);
                })
            })
            .collect();
        let err = (Checker { spec: s, capacity: 1 }).check(&scheds).expect_err("one slot deadlocks");
        assert!(err.to_string().contains("deadlock"), "{err}");
        accept(s, &scheds);
    }

    #[test]
    fn race_between_direct_steps_without_a_barrier() {
        // Both ranks compute the whole sum and write every output: two
        // writers of each element in one phase.
        let all = |loc| (0..2).map(|rank| At { rank, loc }).collect::<Vec<_>>();
        let one = sched(|s| {
            s.barrier()
                .direct(Direct { srcs: all(Loc::input(0)), dsts: all(Loc::output(0)), len: 1, finalize: true })
                .barrier();
        });
        reject(AR2, &[one.clone(), one], "races with rank");
    }

    #[test]
    fn race_between_a_read_and_a_write() {
        // In-place all-to-all read straight from peers' inputs: rank 0 writes
        // its block 1 while rank 1 reads it.
        let s = Spec { collective: Collective::AllToAll, in_place: true, ..AR2 };
        let pull = |r: usize| {
            let p = 1 - r;
            sched(|s| {
                s.barrier()
                    .direct(Direct {
                        srcs: vec![At { rank: p, loc: Loc::input(r) }],
                        dsts: vec![At { rank: r, loc: Loc::output(p) }],
                        len: 1,
                        finalize: false,
                    })
                    .barrier();
            })
        };
        reject(s, &[pull(0), pull(1)], "races with rank");
    }

    #[test]
    fn missing_finalize() {
        let mut scheds = two_rank_all_reduce();
        let Some(Step::Xfer(x)) = scheds[1].steps.first_mut() else { unreachable!() };
        x.finalize = false;
        reject(AR2, &scheds, "(final)");
    }

    #[test]
    fn finalize_before_the_reduction_is_complete() {
        let mut scheds = two_rank_all_reduce();
        scheds[0] = sched(|s| {
            s.xfer(Xfer {
                src: Some(Loc::input(0)),
                recv: Peers::NONE,
                dst: None,
                send: Peers::one(1),
                len: 1,
                finalize: true,
            });
            s.recv(1, Loc::output(0), 1);
        });
        reject(AR2, &scheds, "not a complete reduction");
    }

    #[test]
    fn unconsumed_message() {
        let s = Spec { collective: Collective::Broadcast, ..AR2 };
        let scheds = vec![
            sched(|s| {
                s.copy(Loc::input(0), Loc::output(0), 1, false);
                s.send(1, Loc::input(0), 1).send(1, Loc::input(0), 1);
            }),
            sched(|s| {
                s.recv(0, Loc::output(0), 1);
            }),
        ];
        reject(s, &scheds, "1 message(s) from rank 0 to rank 1 never received");
    }

    #[test]
    fn out_of_bounds() {
        let s = Spec { collective: Collective::AllReduce, world: 1, count: 2, ..AR2 };
        reject(
            s,
            &[sched(|s| {
                s.copy(Loc::input(0), Loc::output(1), 2, true);
            })],
            "out of bounds",
        );
        reject(
            s,
            &[sched(|s| {
                s.copy(Loc::input(0), Loc::scratch(0), 2, false);
            })],
            "out of bounds",
        );
    }

    #[test]
    fn message_longer_than_a_slice() {
        let s = Spec { count: 2, slice: 1, ..AR2 };
        let scheds = vec![
            sched(|s| {
                s.send(1, Loc::input(0), 2).recv(1, Loc::output(0), 2);
            }),
            sched(|s| {
                s.recv_reduce_copy_send(0, Loc::input(0), Loc::output(0), 0, 2);
            }),
        ];
        reject(s, &scheds, "exceeds the slice");
    }

    #[test]
    fn writes_an_out_of_place_input() {
        let s = Spec { world: 1, ..AR2 };
        let scheds = [sched(|s| {
            s.copy(Loc::input(0), Loc::input(0), 1, true).copy(Loc::input(0), Loc::output(0), 1, false);
        })];
        reject(s, &scheds, "writes its input");
        // In place the same steps are legal (input and output are one array).
        accept(Spec { in_place: true, ..s }, &scheds);
    }

    #[test]
    fn touches_a_non_root_output_in_reduce() {
        // Rank 1 (not the root) stores the partial sum it sends.
        let s = Spec { collective: Collective::Reduce, root: 0, ..AR2 };
        let scheds = vec![
            sched(|s| {
                s.recv_reduce_copy(1, Loc::input(0), Loc::output(0), 1, true);
            }),
            sched(|s| {
                s.copy(Loc::input(0), Loc::output(0), 1, false).send(0, Loc::input(0), 1);
            }),
        ];
        reject(s, &scheds, "rank 1: output[0]");
    }

    #[test]
    fn wrong_output() {
        // All-gather where rank 1 files both blocks under the wrong rank.
        let s = Spec { collective: Collective::AllGather, ..AR2 };
        let scheds = vec![
            sched(|s| {
                s.copy(Loc::input(0), Loc::output(0), 1, false);
                s.send(1, Loc::input(0), 1).recv(1, Loc::output(1), 1);
            }),
            sched(|s| {
                s.copy(Loc::input(0), Loc::output(0), 1, false);
                s.send(0, Loc::input(0), 1).recv(0, Loc::output(1), 1);
            }),
        ];
        reject(s, &scheds, "rank 1: output[0] is input[0] of ranks [1] but should be input[0] of ranks [0]");
    }

    #[test]
    fn barrier_without_hearing_from_everyone() {
        // A one-way chain 0 → 1 → 2: rank 0 hears from no one.
        let s = Spec { collective: Collective::Barrier, world: 3, count: 0, ..AR2 };
        let scheds = vec![
            sched(|s| {
                s.send(1, Loc::input(0), 0);
            }),
            sched(|s| {
                s.recv_copy_send(0, Loc::output(0), 2, 0);
            }),
            sched(|s| {
                s.recv(1, Loc::output(0), 0);
            }),
        ];
        reject(s, &scheds, "without hearing from ranks [1, 2]");
    }
}
