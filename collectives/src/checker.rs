//! The checker: runs every rank's schedule on symbolic data and proves that
//! each rank ends with exactly the collective's result.
//!
//! Each element is a [`Sym`]: the index of the input element it stems from and
//! the set of ranks whose contributions it holds. Inputs start as singletons,
//! everything else as poison. Reducing two values demands the same index and
//! disjoint rank sets (so nothing is counted twice or misaligned), finalizing
//! demands the full set, and outputs are compared element by element against
//! the closed-form answer.
//!
//! Ranks run in turns. Channels between ranks hold at most
//! [`Checker::capacity`] messages (by default [`MIN_SLOTS`], the fewest a
//! transport may offer; more buffering cannot create a deadlock in these
//! sequential programs), and an xfer fires only when all of its messages are
//! there and all of its destinations have room, as in the executor: a fused
//! receive-and-send holds the message it reads while it writes the next one,
//! which is why a transport needs two slots per channel, not one. When no rank can
//! move and some are unfinished, the schedule deadlocks and the checker says
//! where every rank is stuck. One-sided (direct) accesses are logged per
//! barrier phase: two ranks touching one element in the same phase, one of
//! them writing, is a race; touching another rank's input or output after the
//! last barrier is an error too (that rank may have returned). For the barrier collective the checker also tracks
//! which ranks each rank has heard from (through messages and barriers) and
//! demands that every rank has heard from all before it leaves.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use crate::schedule::{At, Buf, Collective, Loc, Rank, Schedule, Spec, Step, Xfer};

/// Messages every transport's channels hold at least.
pub const MIN_SLOTS: usize = 2;

/// A symbolic element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sym {
    /// Never written, or not meaningful.
    Poison,
    /// Input element `idx` reduced over the ranks in the bit set `ranks`;
    /// `fin` once the final operator has been applied.
    Val { idx: u32, ranks: u64, fin: bool },
}

/// Why a schedule is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    pub rank: Option<Rank>,
    pub step: Option<usize>,
    pub what: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.rank, self.step) {
            (Some(r), Some(s)) => write!(f, "rank {r}, step {s}: {}", self.what),
            (Some(r), None) => write!(f, "rank {r}: {}", self.what),
            _ => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for CheckError {}

fn err(rank: Rank, step: usize, what: impl Into<String>) -> CheckError {
    CheckError { rank: Some(rank), step: Some(step), what: what.into() }
}

struct Msg {
    vals: Vec<Sym>,
    knows: u64,
}

/// One rank's memory: the in-place array (or input and output apart) and scratch.
struct Mem {
    main: Vec<Sym>,
    /// Out of place only: the output array (input lives in `main`).
    out: Option<Vec<Sym>>,
    scratch: Vec<Sym>,
    in_off: usize,
    out_off: usize,
    in_len: usize,
    out_len: usize,
}

/// Which array an access lands in (for the race log).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Arr {
    Main,
    Out,
    Scratch,
}

impl Mem {
    fn new(spec: &Spec, rank: Rank, scratch_len: usize) -> Mem {
        let c = spec.collective;
        let (in_len, out_len) = (spec.input_len(), spec.output_len());
        let input = |i: usize| Sym::Val { idx: i as u32, ranks: 1 << rank, fin: false };
        if spec.in_place {
            let (in_off, out_off) = c.in_place_offsets(rank, spec.count);
            let mut main = vec![Sym::Poison; c.in_place_len(spec.world, spec.count)];
            for i in 0..in_len {
                main[in_off + i] = input(i);
            }
            Mem { main, out: None, scratch: vec![Sym::Poison; scratch_len], in_off, out_off, in_len, out_len }
        } else {
            let main = (0..in_len).map(input).collect();
            let out = Some(vec![Sym::Poison; out_len]);
            Mem { main, out, scratch: vec![Sym::Poison; scratch_len], in_off: 0, out_off: 0, in_len, out_len }
        }
    }

    /// Resolves `len` elements at `loc` to (array, start), checking bounds and
    /// that out-of-place inputs are never written.
    fn resolve(&self, loc: Loc, len: usize, write: bool) -> Result<(Arr, usize), String> {
        let (arr, base, limit) = match loc.buf {
            Buf::Input => {
                if write && self.out.is_some() {
                    return Err(format!("writes its input at {}", loc.off));
                }
                (Arr::Main, self.in_off, self.in_len)
            }
            Buf::Output => match self.out {
                Some(_) => (Arr::Out, 0, self.out_len),
                None => (Arr::Main, self.out_off, self.out_len),
            },
            Buf::Scratch => (Arr::Scratch, 0, self.scratch.len()),
        };
        if loc.off + len > limit {
            return Err(format!("{:?}[{}..{}] is out of bounds (length {limit})", loc.buf, loc.off, loc.off + len));
        }
        Ok((arr, base + loc.off))
    }

    fn arr(&self, a: Arr) -> &Vec<Sym> {
        match a {
            Arr::Main => &self.main,
            Arr::Out => self.out.as_ref().expect("out-of-place output"),
            Arr::Scratch => &self.scratch,
        }
    }

    fn arr_mut(&mut self, a: Arr) -> &mut Vec<Sym> {
        match a {
            Arr::Main => &mut self.main,
            Arr::Out => self.out.as_mut().expect("out-of-place output"),
            Arr::Scratch => &mut self.scratch,
        }
    }
}

/// Runs schedules symbolically; see the module docs.
pub struct Checker {
    pub spec: Spec,
    /// Messages a channel holds before its sender must wait.
    pub capacity: usize,
}

impl Checker {
    pub fn new(spec: Spec) -> Checker {
        Checker { spec, capacity: MIN_SLOTS }
    }

    /// Checks the schedules `algo` gives every rank.
    pub fn check_algorithm(spec: Spec, algo: crate::Algorithm) -> Result<(), CheckError> {
        let scheds: Vec<Schedule> = (0..spec.world).map(|r| algo.schedule(&spec, r)).collect();
        Checker::new(spec).check(&scheds)
    }

    /// Checks one schedule per rank.
    pub fn check(&self, scheds: &[Schedule]) -> Result<(), CheckError> {
        let spec = &self.spec;
        let n = spec.world;
        let top = |what: String| CheckError { rank: None, step: None, what };
        if scheds.len() != n {
            return Err(top(format!("{} schedules for {n} ranks", scheds.len())));
        }
        if n == 0 || n > 64 {
            return Err(top(format!("world size {n} outside 1..=64")));
        }
        let all: u64 = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let mut mem: Vec<Mem> = (0..n).map(|r| Mem::new(spec, r, scheds[r].scratch_len)).collect();
        let mut pc = vec![0usize; n];
        let mut knows: Vec<u64> = (0..n).map(|r| 1u64 << r).collect();
        let mut chans: HashMap<(Rank, Rank), VecDeque<Msg>> = HashMap::new();
        let track = scheds.iter().any(|s| s.steps.iter().any(|st| matches!(st, Step::Direct(_) | Step::Inline(_))));
        let mut log: Accesses = HashMap::new();
        // Barriers completed so far, and in all: after the last one a rank may
        // return, so nobody else may touch its input or output any more.
        let mut phase = 0;
        let last_phase = scheds[0].steps.iter().filter(|s| matches!(s, Step::Barrier | Step::Inline(_))).count();
        // Ranks that have staged the term of the inline step they are at.
        let mut staged = vec![false; n];

        loop {
            let mut moved = false;
            for r in 0..n {
                while let Some(step) = scheds[r].steps.get(pc[r]) {
                    let s = pc[r];
                    match step {
                        Step::Barrier => break,
                        Step::Xfer(x) => {
                            self.validate_xfer(x, r).map_err(|w| err(r, s, w))?;
                            let ready = x.recv.iter().all(|p| chans.get(&(p, r)).is_some_and(|q| !q.is_empty()))
                                && x.send.iter().all(|p| chans.get(&(r, p)).map_or(0, |q| q.len()) < self.capacity);
                            if !ready {
                                break;
                            }
                            let msgs: Vec<Msg> = x
                                .recv
                                .iter()
                                .map(|p| chans.get_mut(&(p, r)).and_then(|q| q.pop_front()).expect("ready"))
                                .collect();
                            for (m, p) in msgs.iter().zip(x.recv.iter()) {
                                if m.vals.len() != x.len {
                                    return Err(err(
                                        r,
                                        s,
                                        format!("receives {} elements from rank {p}, expected {}", m.vals.len(), x.len),
                                    ));
                                }
                                knows[r] |= m.knows;
                            }
                            let acc = self
                                .xfer_value(x, &mem[r], msgs, all, track.then_some((&mut log, r)))
                                .map_err(|w| err(r, s, w))?;
                            if let Some(dst) = x.dst {
                                write(&mut mem[r], r, dst, &acc, track.then_some((&mut log, r)))
                                    .map_err(|w| err(r, s, w))?;
                            }
                            for p in x.send.iter() {
                                chans.entry((r, p)).or_default().push_back(Msg { vals: acc.clone(), knows: knows[r] });
                            }
                        }
                        Step::Direct(d) => {
                            if d.srcs.is_empty() || d.dsts.is_empty() {
                                return Err(err(r, s, "direct step without sources or destinations"));
                            }
                            let last = phase == last_phase;
                            self.direct(&mut mem, &mut log, (r, s), (&d.srcs, &d.dsts), d.len, d.finalize, last)?;
                        }
                        Step::Inline(i) => {
                            if !staged[r] {
                                if i.terms.is_empty() {
                                    return Err(err(r, s, "inline step without terms"));
                                }
                                // Staging: a copy within this rank's own memory, before the barrier.
                                let (src, stage) = ([At { rank: r, loc: i.src }], [At { rank: r, loc: i.stage }]);
                                if i.stage.buf != Buf::Scratch {
                                    return Err(err(r, s, "stages its term outside its scratch"));
                                }
                                self.direct(&mut mem, &mut log, (r, s), (&src, &stage), i.len, false, false)?;
                                staged[r] = true;
                                moved = true;
                            }
                            break;
                        }
                    }
                    pc[r] += 1;
                    moved = true;
                }
            }
            // Every rank at a barrier (an inline step's staging done): the phase ends.
            let at: Vec<Option<&Step>> = (0..n).map(|r| scheds[r].steps.get(pc[r])).collect();
            let waiting = |st: Option<&Step>, r: Rank| match st {
                Some(Step::Barrier) => true,
                Some(Step::Inline(_)) => staged[r],
                _ => false,
            };
            if (0..n).all(|r| waiting(at[r], r)) {
                let inline = matches!(at[0], Some(Step::Inline(_)));
                if let Some(r) = (1..n).find(|&r| matches!(at[r], Some(Step::Inline(_))) != inline) {
                    let kind = |st: Option<&Step>| describe(st.expect("waiting"));
                    return Err(top(format!(
                        "rank 0 waits at step {} ({}) while rank {r} waits at step {} ({})",
                        pc[0],
                        kind(at[0]),
                        pc[r],
                        kind(at[r])
                    )));
                }
                knows.iter_mut().for_each(|k| *k = all);
                log.clear();
                phase += 1;
                if inline {
                    // After the barrier, each rank combines the staged terms.
                    for r in 0..n {
                        let Some(Step::Inline(i)) = at[r] else { unreachable!("checked above") };
                        let s = pc[r];
                        let last = phase == last_phase;
                        // The executor may read a rank's own term from its source.
                        let own = At { rank: r, loc: i.stage };
                        if i.terms.contains(&own) {
                            read(&mem[r], i.src, i.len, Some((&mut log, r, r))).map_err(|w| err(r, s, w))?;
                        }
                        let dst = [At { rank: r, loc: i.dst }];
                        self.direct(&mut mem, &mut log, (r, s), (&i.terms, &dst), i.len, i.finalize, last)?;
                        staged[r] = false;
                    }
                }
                for p in pc.iter_mut() {
                    *p += 1;
                }
                continue;
            }
            if pc.iter().zip(scheds).all(|(&p, s)| p == s.steps.len()) {
                break;
            }
            if !moved {
                let stuck: Vec<String> = (0..n)
                    .filter_map(|r| {
                        scheds[r].steps.get(pc[r]).map(|st| format!("rank {r} at step {} ({})", pc[r], describe(st)))
                    })
                    .collect();
                return Err(top(format!("deadlock: {}", stuck.join("; "))));
            }
        }
        for ((a, b), q) in &chans {
            if !q.is_empty() {
                return Err(top(format!("{} message(s) from rank {a} to rank {b} never received", q.len())));
            }
        }
        if spec.collective == Collective::Barrier {
            for (r, &k) in knows.iter().enumerate() {
                if k != all {
                    return Err(CheckError {
                        rank: Some(r),
                        step: None,
                        what: format!("leaves the barrier without hearing from ranks {:?}", missing(k, n)),
                    });
                }
            }
        }
        for (r, m) in mem.iter().enumerate() {
            self.verify_output(r, m, all)?;
        }
        Ok(())
    }

    /// A one-sided step of rank `r` at step `s`: combines `srcs` in order,
    /// finalizes if asked and writes every entry of `dsts`, logging each
    /// access for the race check. `last`: no barrier follows, so other ranks'
    /// inputs and outputs are out of reach (they may have returned).
    #[allow(clippy::too_many_arguments)]
    fn direct(
        &self,
        mem: &mut [Mem],
        log: &mut Accesses,
        (r, s): (Rank, usize),
        (srcs, dsts): (&[At], &[At]),
        len: usize,
        finalize: bool,
        last: bool,
    ) -> Result<(), CheckError> {
        let n = self.spec.world;
        let all: u64 = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let after_last = |o: Rank, loc: Loc| {
            (last && o != r && loc.buf != Buf::Scratch).then(|| {
                err(
                    r,
                    s,
                    format!("touches rank {o}'s {:?} after the last barrier, when rank {o} may have returned", loc.buf),
                )
            })
        };
        let mut acc: Option<Vec<Sym>> = None;
        for &At { rank: o, loc } in srcs {
            if o >= n {
                return Err(err(r, s, format!("reads rank {o} of {n}")));
            }
            if let Some(e) = after_last(o, loc) {
                return Err(e);
            }
            let vals = read(&mem[o], loc, len, Some((&mut *log, r, o))).map_err(|w| err(r, s, w))?;
            acc = Some(match acc {
                None => vals,
                Some(a) => self.combine(a, &vals).map_err(|w| err(r, s, w))?,
            });
        }
        let mut acc = acc.expect("sources checked");
        if finalize {
            self.finalize(&mut acc, all).map_err(|w| err(r, s, w))?;
        }
        for &At { rank: o, loc } in dsts {
            if o >= n {
                return Err(err(r, s, format!("writes rank {o} of {n}")));
            }
            if let Some(e) = after_last(o, loc) {
                return Err(e);
            }
            write_at(&mut mem[o], loc, &acc, Some((&mut *log, r, o))).map_err(|w| err(r, s, w))?;
        }
        Ok(())
    }

    fn validate_xfer(&self, x: &Xfer, r: Rank) -> Result<(), String> {
        let n = self.spec.world;
        for (what, peers) in [("receives from", x.recv), ("sends to", x.send)] {
            let v: Vec<Rank> = peers.iter().collect();
            for (i, &p) in v.iter().enumerate() {
                if p >= n || p == r {
                    return Err(format!("{what} rank {p} (world {n}, self {r})"));
                }
                if v[..i].contains(&p) {
                    return Err(format!("{what} rank {p} twice"));
                }
            }
        }
        if x.src.is_none() && x.recv.is_empty() {
            return Err("xfer with neither source nor message".into());
        }
        if x.dst.is_none() && x.send.is_empty() {
            return Err("xfer that neither stores nor sends".into());
        }
        if x.len > self.spec.slice && !(x.recv.is_empty() && x.send.is_empty()) {
            return Err(format!("message of {} elements exceeds the slice of {}", x.len, self.spec.slice));
        }
        Ok(())
    }

    fn xfer_value(
        &self,
        x: &Xfer,
        m: &Mem,
        msgs: Vec<Msg>,
        all: u64,
        log: Option<(&mut Accesses, Rank)>,
    ) -> Result<Vec<Sym>, String> {
        let mut acc = match x.src {
            Some(src) => Some(read(m, src, x.len, log.map(|(l, r)| (l, r, r)))?),
            None => None,
        };
        for msg in msgs {
            acc = Some(match acc {
                None => msg.vals,
                Some(a) => self.combine(a, &msg.vals)?,
            });
        }
        let mut acc = acc.expect("validated");
        if x.finalize {
            self.finalize(&mut acc, all)?;
        }
        Ok(acc)
    }

    fn combine(&self, mut a: Vec<Sym>, b: &[Sym]) -> Result<Vec<Sym>, String> {
        if !self.spec.collective.reduces() {
            return Err(format!("{} combines two values", self.spec.collective));
        }
        for (i, (x, y)) in a.iter_mut().zip(b).enumerate() {
            *x = match (*x, *y) {
                (Sym::Val { idx: i1, ranks: r1, fin: false }, Sym::Val { idx: i2, ranks: r2, fin: false }) => {
                    if i1 != i2 {
                        return Err(format!("element {i}: reduces input element {i1} with {i2}"));
                    }
                    if r1 & r2 != 0 {
                        return Err(format!("element {i}: counts ranks {:?} twice", set(r1 & r2)));
                    }
                    Sym::Val { idx: i1, ranks: r1 | r2, fin: false }
                }
                (Sym::Val { fin: true, .. }, _) | (_, Sym::Val { fin: true, .. }) => {
                    return Err(format!("element {i}: reduces a value already finalized"))
                }
                _ => return Err(format!("element {i}: reduces an undefined value")),
            };
        }
        Ok(a)
    }

    fn finalize(&self, acc: &mut [Sym], all: u64) -> Result<(), String> {
        if !self.spec.collective.reduces() {
            return Ok(());
        }
        for (i, v) in acc.iter_mut().enumerate() {
            match v {
                Sym::Val { ranks, fin, .. } if *ranks == all && !*fin => *fin = true,
                _ => return Err(format!("element {i}: finalizes {v:?}, not a complete reduction")),
            }
        }
        Ok(())
    }

    fn verify_output(&self, r: Rank, m: &Mem, all: u64) -> Result<(), CheckError> {
        let spec = &self.spec;
        let c = spec.count;
        let out: &[Sym] = match &m.out {
            Some(o) => o,
            None => &m.main[m.out_off..m.out_off + m.out_len],
        };
        let red = |idx: usize| Sym::Val { idx: idx as u32, ranks: all, fin: true };
        let one = |idx: usize, from: Rank| Sym::Val { idx: idx as u32, ranks: 1 << from, fin: false };
        // Non-root ranks' reduce output is not theirs to change.
        let untouched = (spec.collective == Collective::Reduce && r != spec.root).then(|| {
            let init = Mem::new(spec, r, 0);
            match init.out {
                Some(o) => o,
                None => init.main[init.out_off..init.out_off + init.out_len].to_vec(),
            }
        });
        for (j, &got) in out.iter().enumerate() {
            let want = match spec.collective {
                Collective::AllReduce => red(j),
                Collective::ReduceScatter => red(r * c + j),
                Collective::AllGather => one(j % c.max(1), j / c.max(1)),
                Collective::Broadcast => one(j, spec.root),
                Collective::Reduce if r == spec.root => red(j),
                Collective::Reduce => untouched.as_ref().expect("non-root")[j],
                Collective::AllToAll => one(r * c + j % c.max(1), j / c.max(1)),
                Collective::Barrier => Sym::Poison,
            };
            if got != want {
                return Err(CheckError {
                    rank: Some(r),
                    step: None,
                    what: format!("output[{j}] is {} but should be {}", show(got), show(want)),
                });
            }
        }
        Ok(())
    }
}

/// Per element touched in the current phase: the ranks that read it and the
/// rank that wrote it.
type Accesses = HashMap<(Rank, Arr, usize), (u64, Option<Rank>)>;
type Log<'a> = Option<(&'a mut Accesses, Rank, Rank)>;

/// Records an access by `who` to `owner`'s `arr[start..start + len]`; two
/// ranks meeting on one element within a phase, one of them writing, is a race.
fn note(log: &mut Log<'_>, arr: Arr, start: usize, len: usize, write: bool) -> Result<(), String> {
    let Some((log, who, owner)) = log else { return Ok(()) };
    let (who, owner) = (*who, *owner);
    for i in start..start + len {
        let e = log.entry((owner, arr, i)).or_insert((0, None));
        let other_writer = e.1.filter(|&w| w != who);
        let other_readers = e.0 & !(1u64 << who);
        let clash =
            other_writer.or_else(|| (write && other_readers != 0).then(|| other_readers.trailing_zeros() as Rank));
        if let Some(other) = clash {
            return Err(format!(
                "races with rank {other} on rank {owner}'s {arr:?}[{i}] (a write and another access with no barrier between)"
            ));
        }
        if write {
            e.1 = Some(who);
        } else {
            e.0 |= 1u64 << who;
        }
    }
    Ok(())
}

fn read(m: &Mem, loc: Loc, len: usize, mut log: Log<'_>) -> Result<Vec<Sym>, String> {
    let (arr, start) = m.resolve(loc, len, false)?;
    note(&mut log, arr, start, len, false)?;
    Ok(m.arr(arr)[start..start + len].to_vec())
}

fn write_at(m: &mut Mem, loc: Loc, vals: &[Sym], mut log: Log<'_>) -> Result<(), String> {
    let (arr, start) = m.resolve(loc, vals.len(), true)?;
    note(&mut log, arr, start, vals.len(), true)?;
    m.arr_mut(arr)[start..start + vals.len()].copy_from_slice(vals);
    Ok(())
}

fn write(m: &mut Mem, r: Rank, loc: Loc, vals: &[Sym], log: Option<(&mut Accesses, Rank)>) -> Result<(), String> {
    write_at(m, loc, vals, log.map(|(l, w)| (l, w, r)))
}

fn set(bits: u64) -> Vec<usize> {
    (0..64).filter(|i| bits >> i & 1 == 1).collect()
}

fn missing(bits: u64, n: usize) -> Vec<usize> {
    (0..n).filter(|i| bits >> i & 1 == 0).collect()
}

fn show(s: Sym) -> String {
    match s {
        Sym::Poison => "undefined".into(),
        Sym::Val { idx, ranks, fin } => {
            format!("input[{idx}] of ranks {:?}{}", set(ranks), if fin { " (final)" } else { "" })
        }
    }
}

fn describe(st: &Step) -> String {
    match st {
        Step::Barrier => "barrier".into(),
        Step::Direct(_) => "direct".into(),
        Step::Inline(i) => format!("inline, {} terms of {} elements", i.terms.len(), i.len),
        Step::Xfer(x) => format!("recv from {:?}, send to {:?}, {} elements", x.recv, x.send, x.len),
    }
}
