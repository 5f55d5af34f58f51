//! The small all-reduce's fast path is the direct algorithm's [`Inline`]
//! step, and the checker proves it: for every world size 1..=16, every count
//! that takes it and both placements (a property test), while schedules
//! mutated the ways an executor could go wrong — a peer's term read from
//! another rank's slot or from the wrong place, a term missing or counted
//! twice, the staged copy outside scratch, ranks that disagree about the
//! step — are rejected.

use oxccl::algo::direct::EAGER_ELEMENTS;
use oxccl::schedule::{At, Inline, Loc, Schedule, Step};
use oxccl::{Algorithm, Checker, Collective, Spec};
use proptest::prelude::*;

fn spec(world: usize, count: usize, in_place: bool) -> Spec {
    Spec { collective: Collective::AllReduce, world, count, root: 0, slice: 1 << 20, in_place }
}

fn schedules(s: &Spec) -> Vec<Schedule> {
    (0..s.world).map(|r| Algorithm::Direct.schedule(s, r)).collect()
}

/// The inline step of rank `r`'s schedule, to mutate.
fn inline_of(scheds: &mut [Schedule], r: usize) -> &mut Inline {
    match scheds[r].steps.as_mut_slice() {
        [Step::Inline(i)] => i,
        other => panic!("rank {r}: expected one inline step, got {other:?}"),
    }
}

/// Checks `scheds` after `mutate`, which must make the checker refuse them.
fn refused(s: Spec, what: &str, mutate: impl FnOnce(&mut Vec<Schedule>)) {
    let mut scheds = schedules(&s);
    mutate(&mut scheds);
    let res = Checker::new(s).check(&scheds);
    assert!(res.is_err(), "{what}, {s:?}: the checker accepted it");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every world 1..=16 and every count up to the eager limit is one
    /// inline step per rank, and the checker proves it.
    #[test]
    fn the_fast_path_is_proven(world in 1..=16usize, pick in 1..=EAGER_ELEMENTS, in_place in any::<bool>()) {
        let count = 1 + (pick - 1) % (EAGER_ELEMENTS / world);
        let s = spec(world, count, in_place);
        let scheds = schedules(&s);
        for (r, sched) in scheds.iter().enumerate() {
            let ok = matches!(sched.steps.as_slice(), [Step::Inline(i)] if i.terms.len() == world && i.len == count);
            prop_assert!(ok, "rank {}: {:?}", r, sched.steps);
        }
        let res = Checker::new(s).check(&scheds);
        prop_assert!(res.is_ok(), "{:?}: {:?}", s, res);
    }
}

/// Exhaustively, worlds 1..=16 at the awkward counts: proven, and a step
/// past the limit is no longer inline.
#[test]
fn every_world_and_edge_count() {
    for world in 1..=16 {
        let top = EAGER_ELEMENTS / world;
        for count in [1, 2, 3, 7, top - 1, top].into_iter().filter(|&c| c >= 1 && c <= top) {
            for in_place in [false, true] {
                let s = spec(world, count, in_place);
                Checker::new(s).check(&schedules(&s)).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            }
        }
        let past = schedules(&spec(world, top + 1, false));
        assert!(!past[0].steps.iter().any(|st| matches!(st, Step::Inline(_))), "world {world}");
    }
}

/// A peer's term read from another rank's slot: for every world 2..=16,
/// every rank and every term, the term pointed at each wrong rank in turn.
#[test]
fn a_term_from_the_wrong_slot_is_refused() {
    for world in 2..=16 {
        for in_place in [false, true] {
            let s = spec(world, 5, in_place);
            for r in 0..world {
                for k in 0..world {
                    for wrong in (0..world).filter(|&q| q != k) {
                        refused(s, &format!("rank {r} reads term {k} from rank {wrong}"), |sc| {
                            inline_of(sc, r).terms[k].rank = wrong;
                        });
                    }
                }
            }
        }
    }
}

#[test]
fn other_mutations_are_refused() {
    let s = spec(4, 6, false);
    refused(s, "a term one element off", |sc| inline_of(sc, 2).terms[1].loc = Loc::scratch(1));
    refused(s, "a term missing", |sc| {
        inline_of(sc, 1).terms.pop();
    });
    refused(s, "a term twice", |sc| inline_of(sc, 0).terms.push(At { rank: 3, loc: Loc::scratch(0) }));
    refused(s, "a term from a peer's input", |sc| inline_of(sc, 3).terms[0].loc = Loc::input(0));
    refused(s, "staged outside scratch", |sc| inline_of(sc, 1).stage = Loc::output(0));
    refused(s, "staged at another place than peers read", |sc| {
        let i = inline_of(sc, 1);
        i.stage = Loc::scratch(1);
        i.src = Loc::input(0);
    });
    refused(s, "not finalized", |sc| inline_of(sc, 0).finalize = false);
    refused(s, "a rank at a barrier instead", |sc| sc[2].steps = vec![Step::Barrier]);
    refused(s, "a rank that never stages", |sc| sc[3].steps.clear());
    // In place the output is the input: reading a peer's output (its input,
    // overwritten by then) after the barrier is refused too.
    let p = spec(3, 4, true);
    refused(p, "a term from a peer's output", |sc| inline_of(sc, 0).terms[2].loc = Loc::output(0));
}
