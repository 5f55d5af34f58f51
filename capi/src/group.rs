//! Groups: between oxcclGroupStart and oxcclGroupEnd calls are checked and
//! recorded (per thread; groups nest, the outermost end issues); the end
//! issues them together: per communicator its collectives in call order,
//! then all its sends and receives at once (`Communicator::exchange`), each
//! communicator on a thread of its own when there are several.

use std::cell::RefCell;

use oxccl_core::{Call, DType};

use crate::coll::{exchange, run, Buffers};
use crate::error::{guard, remember, Failure};
use crate::types::*;
use crate::Busy;

/// A recorded call.
#[derive(Clone, Copy)]
pub(crate) enum Op {
    Collective((Call, Buffers)),
    P2p { send: bool, buf: *mut u8, bytes: usize, dtype: DType, peer: usize, stream: usize },
}

struct Recorded {
    comm: oxcclComm_t,
    op: Op,
}

#[derive(Default)]
struct Group {
    depth: usize,
    ops: Vec<Recorded>,
}

thread_local! {
    static GROUP: RefCell<Group> = RefCell::new(Group::default());
}

/// Inside a group: checks the call on `comm` (`check`) and records it,
/// returning its result code; outside one: `None` (the caller runs it).
pub(crate) fn record(
    comm: oxcclComm_t,
    check: impl FnOnce(&oxcclComm) -> Result<Op, Failure>,
) -> Option<oxcclResult_t> {
    if GROUP.with(|g| g.borrow().depth) == 0 {
        return None;
    }
    if comm.is_null() {
        return Some(guard(None, || Err(Failure::invalid("comm is NULL"))));
    }
    // SAFETY: a live handle (the caller's contract); only read here.
    let c = unsafe { &*comm };
    Some(guard(Some(c), || {
        let op = check(c)?;
        GROUP.with(|g| g.borrow_mut().ops.push(Recorded { comm, op }));
        Ok(())
    }))
}

/// Starts (or nests) a group.
#[no_mangle]
pub extern "C" fn oxcclGroupStart() -> oxcclResult_t {
    guard(None, || {
        GROUP.with(|g| g.borrow_mut().depth += 1);
        Ok(())
    })
}

/// Ends a group; the outermost end issues every recorded call and returns
/// once all have completed (the first failure's code, each communicator's
/// own failure kept as its last error).
#[no_mangle]
pub extern "C" fn oxcclGroupEnd() -> oxcclResult_t {
    guard(None, || {
        let ops = GROUP.with(|g| {
            let mut g = g.borrow_mut();
            if g.depth == 0 {
                return Err(Failure::usage("oxcclGroupEnd without oxcclGroupStart"));
            }
            g.depth -= 1;
            Ok(if g.depth == 0 { std::mem::take(&mut g.ops) } else { Vec::new() })
        })?;
        issue(ops)
    })
}

/// One communicator's part of a group, sent to the thread that runs it.
struct Part {
    comm: oxcclComm_t,
    ops: Vec<Op>,
}

// SAFETY: the raw pointers are the caller's buffers and communicator, which stay valid and
// untouched by anything else until oxcclGroupEnd returns (its contract); each part goes to
// one thread, and a communicator is entered by one thread at a time (`Busy`).
unsafe impl Send for Part {}

fn issue(ops: Vec<Recorded>) -> Result<(), Failure> {
    let mut parts: Vec<Part> = Vec::new();
    for r in ops {
        match parts.iter_mut().find(|p| p.comm == r.comm) {
            Some(p) => p.ops.push(r.op),
            None => parts.push(Part { comm: r.comm, ops: vec![r.op] }),
        }
    }
    let results: Vec<Result<(), Failure>> = match parts.len() {
        0 => return Ok(()),
        1 => vec![run_part(&parts[0])],
        _ => std::thread::scope(|s| {
            let handles: Vec<_> = parts.into_iter().map(|p| s.spawn(move || run_part(&p))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Failure { code: oxcclInternalError, text: "a group's thread panicked".into() })
                    })
                })
                .collect()
        }),
    };
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

fn run_part(part: &Part) -> Result<(), Failure> {
    // SAFETY: a live handle recorded in the group (the caller's contract).
    let c = unsafe { &*part.comm };
    let Some(_busy) = Busy::enter(c) else {
        return Err(Failure::usage("the communicator is in use by another thread"));
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for op in &part.ops {
            if let Op::Collective((call, b)) = op {
                run(c, call, *b)?;
            }
        }
        if part.ops.iter().any(|op| matches!(op, Op::P2p { .. })) {
            exchange(c, &part.ops)?;
        }
        Ok(())
    }))
    .unwrap_or_else(|_| {
        Err(Failure { code: oxcclInternalError, text: "internal error (please report): a panic".into() })
    });
    if let Err(f) = &result {
        remember(Some(c), &f.text);
    }
    result
}
