//! Emulated streams and events: an in-order queue of operations run by a
//! thread of its own, as a GPU runs a stream's work after the host call
//! that enqueued it has returned.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use oxccl::mem::Region;
use oxccl::{DType, ReduceOp};

use super::{EmuDevice, Reducer};
use crate::emu::Emu;
use crate::error::{Error, Result};
use crate::kernels;
use crate::runner::Runner;

/// How long a stream operation may wait (for an event or a memory value)
/// before it fails the stream, unless set with [`EmuStream::set_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// An enqueued operation; `Fn`, so that a captured graph can run it again.
type Op = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// What a stream-level wait ([`EmuStream::wait_value`]) consults while it
/// waits: `Some(why)` once it should give up (its group was aborted), so
/// no stream waits forever on a word nobody will write.
pub trait Watch: Send + Sync + 'static {
    fn stop(&self) -> Option<String>;
    /// How long the wait may last; `None`: the stream's timeout.
    fn timeout(&self) -> Option<Duration> {
        None
    }
    /// Called when the wait gives up after `waited`, before it fails the
    /// stream (to tell the group whom it waited for).
    fn timed_out(&self, waited: Duration) {
        let _ = waited;
    }
}

impl Watch for AtomicBool {
    fn stop(&self) -> Option<String> {
        self.load(Ordering::Acquire).then(|| "aborted".to_string())
    }
}

/// Called once with a stream's first error, from the stream's thread.
pub type OnError = Arc<dyn Fn(&str) + Send + Sync>;

/// Where streams waiting on memory words sleep: every word written by a
/// stream rings it (a generation count under a lock, so no ring is lost
/// between a waiter's look at its word and its sleep).
#[derive(Default)]
pub(crate) struct Bell {
    generation: Mutex<u64>,
    rung: Condvar,
}

impl Bell {
    fn ring(&self) {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.rung.notify_all();
    }

    /// Sleeps until the bell rings after `ready` was false, at most `max`.
    fn sleep_unless(&self, ready: impl Fn() -> bool, max: Duration) {
        let g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        if !ready() {
            let _ = self.rung.wait_timeout(g, max);
        }
    }
}

/// A stream's queue, shared by the stream, its worker, its events and the
/// device (which drains it before freeing memory).
pub(crate) struct Queue {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    ops: VecDeque<Op>,
    /// Operations ever enqueued, and run (or skipped after an error).
    enqueued: u64,
    done: u64,
    /// The first error; every later operation is skipped (sticky, as a
    /// CUDA error that poisons the context).
    error: Option<String>,
    closed: bool,
    on_error: Option<OnError>,
    /// While the stream is captured: what was enqueued since, which did
    /// not run (`cuStreamBeginCapture`).
    capture: Option<Vec<Op>>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every operation enqueued so far has run.
    pub(crate) fn drain(&self) {
        let mut s = self.lock();
        let target = s.enqueued;
        while s.done < target {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn reached(&self, mark: u64) -> bool {
        self.lock().done >= mark
    }

    fn run(&self) {
        loop {
            let op = {
                let mut s = self.lock();
                loop {
                    if let Some(op) = s.ops.pop_front() {
                        break op;
                    }
                    if s.closed {
                        return;
                    }
                    s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                }
            };
            let failed = self.lock().error.is_some();
            let result = if failed { Ok(()) } else { op() };
            let mut s = self.lock();
            let mut first = None;
            if let Err(e) = result {
                if s.error.is_none() {
                    s.error = Some(e.to_string());
                    first = s.on_error.clone().map(|hook| (hook, e.to_string()));
                }
            }
            s.done += 1;
            self.changed.notify_all();
            drop(s);
            if let Some((hook, e)) = first {
                hook(&e);
            }
        }
    }
}

/// One emulated stream of an [`EmuDevice`]; see the module docs of
/// [`crate::emudev`]. Dropping it waits for its queue to run out.
pub struct EmuStream {
    dev: Arc<EmuDevice>,
    queue: Arc<Queue>,
    worker: Option<JoinHandle<()>>,
    timeout: Duration,
}

impl std::fmt::Debug for EmuStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuStream").field("device", &self.dev.ordinal()).finish()
    }
}

/// A point in a stream's queue: complete once everything enqueued on the
/// stream before it was recorded has run.
#[derive(Clone)]
pub struct EmuEvent {
    queue: Arc<Queue>,
    mark: u64,
}

impl EmuEvent {
    /// Whether the work before the event has run (`cudaEventQuery`).
    pub fn query(&self) -> bool {
        self.queue.reached(self.mark)
    }

    /// Waits for the work before the event, at most `timeout`.
    pub fn synchronize(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut s = self.queue.lock();
        while s.done < self.mark {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::invalid("emu event", format!("not reached after {timeout:?}")));
            }
            s = self.queue.changed.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        Ok(())
    }
}

impl EmuStream {
    pub(super) fn new(dev: Arc<EmuDevice>) -> EmuStream {
        let queue = Arc::new(Queue {
            state: Mutex::new(State {
                ops: VecDeque::new(),
                enqueued: 0,
                done: 0,
                error: None,
                closed: false,
                on_error: None,
                capture: None,
            }),
            changed: Condvar::new(),
        });
        let q = queue.clone();
        let worker = std::thread::Builder::new()
            .name(format!("emu{}-stream", dev.ordinal()))
            .spawn(move || q.run())
            .expect("spawning an emulated stream's thread");
        EmuStream { dev, queue, worker: Some(worker), timeout: DEFAULT_TIMEOUT }
    }

    pub(super) fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    pub fn device(&self) -> &Arc<EmuDevice> {
        &self.dev
    }

    /// How long a waiting operation may wait before it fails the stream.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// `hook` is called (on the stream's thread) with the stream's first
    /// error: a failure nobody is waiting for reaches whoever must know
    /// (the communicator aborts its group).
    pub fn on_error(&self, hook: OnError) {
        self.queue.lock().on_error = Some(hook);
    }

    /// How long a waiting operation may wait before it fails the stream.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn enqueue(&self, op: Op) {
        let mut s = self.queue.lock();
        if let Some(graph) = &mut s.capture {
            return graph.push(op);
        }
        s.ops.push_back(op);
        s.enqueued += 1;
        self.queue.changed.notify_all();
    }

    /// Waits until everything enqueued so far has run; the stream's first
    /// error, if any (it stays: every later call reports it too).
    pub fn synchronize(&self) -> Result<()> {
        if self.capturing() {
            return Err(Error::invalid("emu stream", "synchronize while the stream is being captured"));
        }
        self.queue.drain();
        match &self.queue.lock().error {
            None => Ok(()),
            Some(e) => Err(Error::invalid("emu stream", e.clone())),
        }
    }

    /// The stream's first error so far, without waiting.
    pub fn error(&self) -> Option<String> {
        self.queue.lock().error.clone()
    }

    /// Starts capturing: what is enqueued from now on is kept for a graph
    /// ([`EmuStream::end_capture`]) instead of running
    /// (`cuStreamBeginCapture`). Errors while already capturing.
    pub fn begin_capture(&self) -> Result<()> {
        let mut s = self.queue.lock();
        if s.capture.is_some() {
            return Err(Error::invalid("emu capture", "the stream is already being captured"));
        }
        s.capture = Some(Vec::new());
        Ok(())
    }

    /// Ends the capture begun by [`EmuStream::begin_capture`]: the graph of
    /// everything enqueued meanwhile (`cuStreamEndCapture`).
    pub fn end_capture(&self) -> Result<EmuGraph> {
        match self.queue.lock().capture.take() {
            Some(ops) => Ok(EmuGraph { ops, device: self.dev.ordinal() }),
            None => Err(Error::invalid("emu capture", "the stream is not being captured")),
        }
    }

    /// Whether the stream is being captured.
    pub fn capturing(&self) -> bool {
        self.queue.lock().capture.is_some()
    }

    /// An event after everything enqueued so far (`cudaEventRecord`).
    pub fn record(&self) -> EmuEvent {
        EmuEvent { queue: self.queue.clone(), mark: self.queue.lock().enqueued }
    }

    /// Later work on this stream waits for `event` (`cudaStreamWaitEvent`);
    /// past the stream's timeout the wait fails the stream. (In a capture
    /// the wait is kept as it is: the event stays the one recorded.)
    pub fn wait_event(&self, event: &EmuEvent) {
        let (event, timeout) = (event.clone(), self.timeout);
        self.enqueue(Arc::new(move || event.synchronize(timeout)));
    }

    /// `dst = src` (`cudaMemcpyAsync`): host memory or device memory this
    /// device reaches on either side, as with unified addressing; equal
    /// lengths, disjoint.
    ///
    /// # Safety
    /// Both regions stay valid until the copy has run (device buffers wait
    /// for it when dropped; host memory is the caller's to keep), and
    /// nothing else writes `dst` or `src` meanwhile.
    pub unsafe fn copy(&self, dst: Region, src: Region) -> Result<()> {
        if dst.len() != src.len() || (!dst.is_empty() && dst.overlaps(&src)) {
            return Err(Error::invalid("emu copy", format!("{} bytes into {} (or overlapping)", src.len(), dst.len())));
        }
        self.dev.check_copy("copy dst", dst)?;
        self.dev.check_copy("copy src", src)?;
        // SAFETY: the caller keeps both regions valid and unshared until the op has run.
        self.enqueue(Arc::new(move || unsafe {
            dst.bytes_mut().copy_from_slice(src.bytes());
            Ok(())
        }));
        Ok(())
    }

    /// `dst = a ⊕ b` by the reducer kernel (`dst` may be `a`); every region
    /// device memory this device reaches. Errors, before anything is
    /// enqueued, for a (dtype, op) without a kernel (`Avg` included: its
    /// division is not a kernel yet), unequal lengths or memory elsewhere.
    ///
    /// # Safety
    /// As for [`EmuStream::copy`].
    pub unsafe fn reduce(&self, dtype: DType, op: ReduceOp, dst: Region, a: Region, b: Region) -> Result<()> {
        let kernel = kernels::reduce_kernel(op, dtype)?;
        if a.len() != dst.len() || b.len() != dst.len() || dst.len() % dtype.size() != 0 {
            return Err(Error::invalid(kernel, format!("{} = {} ⊕ {} bytes", dst.len(), a.len(), b.len())));
        }
        for (what, r) in [("reduce dst", dst), ("reduce a", a), ("reduce b", b)] {
            self.dev.check_reach(what, r)?;
        }
        if dst.overlaps(&b) || (dst != a && dst.overlaps(&a)) {
            return Err(Error::invalid(kernel, "the destination overlaps a source other than itself"));
        }
        let reducer = self.dev.reducer();
        // SAFETY: the caller keeps the regions valid and unshared until the op has run; dst
        // overlaps no source but `a` when it is `a` (checked above).
        self.enqueue(Arc::new(move || unsafe {
            match (reducer, dst == a) {
                (Reducer::Kernels, true) => Emu::default().reduce_in_place(op, dtype, dst.bytes_mut(), b.bytes()),
                (Reducer::Kernels, false) => Emu::default().reduce(op, dtype, dst.bytes_mut(), a.bytes(), b.bytes()),
                (Reducer::Host, true) => {
                    oxccl::reduce::reduce_in_place(dtype, op, dst.bytes_mut(), b.bytes());
                    Ok(())
                }
                (Reducer::Host, false) => {
                    oxccl::reduce::reduce(dtype, op, dst.bytes_mut(), a.bytes(), b.bytes());
                    Ok(())
                }
            }
        }));
        Ok(())
    }

    /// The direct step's reducer in one kernel: every `dsts[j]` =
    /// `srcs[0] ⊕ srcs[1] ⊕ ...` in order, divided by `avg` when it is not
    /// 0 (see `reduce_multi` in `ptx/kernels/reduce.cu`); 1 ..=
    /// [`kernels::MULTI_MAX`] sources, up to as many destinations, equal
    /// lengths, device memory this device reaches. A destination is a
    /// source exactly or overlaps none, and no two destinations overlap.
    /// Errors before anything is enqueued.
    ///
    /// # Safety
    /// As for [`EmuStream::copy`].
    pub unsafe fn reduce_multi(
        &self,
        dtype: DType,
        op: ReduceOp,
        srcs: &[Region],
        dsts: &[Region],
        avg: u32,
    ) -> Result<()> {
        let kernel = kernels::reduce_multi_kernel(op, dtype)?;
        let len = kernels::check_multi_regions(kernel, dtype, srcs, dsts)? * dtype.size();
        for (i, d) in dsts.iter().enumerate() {
            if srcs.iter().any(|s| s.overlaps(d) && s != d) || dsts[..i].iter().any(|o| o.overlaps(d)) {
                return Err(Error::invalid(kernel, "a destination overlaps another region"));
            }
        }
        if len == 0 || dsts.is_empty() {
            return Ok(());
        }
        for r in srcs.iter().chain(dsts) {
            self.dev.check_reach("reduce_multi", *r)?;
        }
        let (srcs, dsts, reducer) = (srcs.to_vec(), dsts.to_vec(), self.dev.reducer());
        // SAFETY: the caller keeps the regions valid, the sources unwritten and the destinations
        // unshared until the op has run; the overlaps were checked above.
        self.enqueue(Arc::new(move || unsafe {
            match reducer {
                Reducer::Kernels => {
                    let s: Vec<*const u8> = srcs.iter().map(|r| r.addr() as *const u8).collect();
                    let d: Vec<*mut u8> = dsts.iter().map(|r| r.addr() as *mut u8).collect();
                    Emu::default().reduce_multi_raw(op, dtype, &s, &d, len / dtype.size(), avg)
                }
                Reducer::Host => {
                    let mut acc = srcs[0].bytes().to_vec();
                    for s in &srcs[1..] {
                        oxccl::reduce::reduce_in_place(dtype, op, &mut acc, s.bytes());
                    }
                    if avg > 0 {
                        oxccl::reduce::finalize(dtype, ReduceOp::Avg, avg as usize, &mut acc);
                    }
                    for d in &dsts {
                        d.bytes_mut().copy_from_slice(&acc);
                    }
                    Ok(())
                }
            }
        }));
        Ok(())
    }

    /// `dst = dst / world` (avg's final step) by its kernel; `dst` device
    /// memory this device reaches, whole elements of `dtype`. Errors
    /// before anything is enqueued for a dtype without the kernel.
    ///
    /// # Safety
    /// As for [`EmuStream::copy`].
    pub unsafe fn avg_div(&self, dtype: DType, dst: Region, world: u32) -> Result<()> {
        let kernel = kernels::avg_kernel(dtype)?;
        if dst.len() % dtype.size() != 0 || world == 0 {
            return Err(Error::invalid(kernel, format!("{} bytes over {world} ranks", dst.len())));
        }
        self.dev.check_reach("avg dst", dst)?;
        let reducer = self.dev.reducer();
        // SAFETY: the caller keeps `dst` valid and unshared until the op has run.
        self.enqueue(Arc::new(move || unsafe {
            match reducer {
                Reducer::Kernels => Emu::default().avg_div(dtype, dst.bytes_mut(), world),
                Reducer::Host => {
                    oxccl::reduce::finalize(dtype, ReduceOp::Avg, world as usize, dst.bytes_mut());
                    Ok(())
                }
            }
        }));
        Ok(())
    }

    /// Stores `value` into the 8-byte word `word` of device memory once the
    /// work before it has run (`cuStreamWriteValue64`).
    pub fn write_value(&self, word: Region, value: u64) -> Result<()> {
        let w = self.word(word)?;
        let allocs = self.dev.allocs.clone();
        self.enqueue(Arc::new(move || {
            // SAFETY: `w` is 8 aligned bytes inside a device allocation (checked by `word`), and
            // device memory is freed only after the platform's streams have run.
            unsafe { &*(w as *const AtomicU64) }.store(value, Ordering::Release);
            allocs.words.ring();
            Ok(())
        }));
        Ok(())
    }

    /// Later work waits until the 8-byte word `word` of device memory holds
    /// at least `value` (`cuStreamWaitValue64` with GEQ), or fails the
    /// stream when `watch` says stop or the stream's timeout passes — so a
    /// stream never waits forever on a word nobody will write. `what` names
    /// the wait in the timeout's error.
    pub fn wait_value(&self, word: Region, value: u64, what: String, watch: Arc<dyn Watch>) -> Result<()> {
        let w = self.word(word)?;
        let timeout = watch.timeout().unwrap_or(self.timeout);
        let allocs = self.dev.allocs.clone();
        self.enqueue(Arc::new(move || wait_word(&allocs, w, value, timeout, &what, &*watch)));
        Ok(())
    }

    /// Stores `(epoch << 32) + offset` into the word `word`, `epoch` being
    /// the 8-byte word read when the operation runs: a signal relative to
    /// a count the device keeps, so that a captured graph replayed after
    /// [`EmuStream::advance`] signals with fresh values (`sig_write` in
    /// `ptx/kernels/signal.cu`, which a GPU runs instead).
    pub fn write_signal(&self, word: Region, epoch: Region, offset: u64) -> Result<()> {
        let (w, e) = (self.word(word)?, self.word(epoch)?);
        let allocs = self.dev.allocs.clone();
        self.enqueue(Arc::new(move || {
            // SAFETY: both are 8 aligned bytes inside device allocations (checked by `word`), and
            // device memory is freed only after the platform's streams have run.
            let (word, epoch) = unsafe { (&*(w as *const AtomicU64), &*(e as *const AtomicU64)) };
            word.store(signal_value(epoch.load(Ordering::Acquire), offset), Ordering::Release);
            allocs.words.ring();
            Ok(())
        }));
        Ok(())
    }

    /// Later work waits until `word` holds at least `(epoch << 32) +
    /// offset`, `epoch` read when the wait starts (`sig_wait`); as
    /// [`EmuStream::wait_value`] otherwise.
    pub fn wait_signal(
        &self,
        word: Region,
        epoch: Region,
        offset: u64,
        what: String,
        watch: Arc<dyn Watch>,
    ) -> Result<()> {
        let (w, e) = (self.word(word)?, self.word(epoch)?);
        let timeout = watch.timeout().unwrap_or(self.timeout);
        let allocs = self.dev.allocs.clone();
        self.enqueue(Arc::new(move || {
            // SAFETY: as in `write_signal`.
            let value = signal_value(unsafe { &*(e as *const AtomicU64) }.load(Ordering::Acquire), offset);
            wait_word(&allocs, w, value, timeout, &format!("{what} (value {value:#x})"), &*watch)
        }));
        Ok(())
    }

    /// Adds one to the 8-byte word `epoch` once the work before it has run
    /// (`sig_advance`).
    pub fn advance(&self, epoch: Region) -> Result<()> {
        let e = self.word(epoch)?;
        self.enqueue(Arc::new(move || {
            // SAFETY: as in `write_signal`.
            unsafe { &*(e as *const AtomicU64) }.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }));
        Ok(())
    }

    /// The address of a flag word: 8 aligned bytes of device memory.
    fn word(&self, word: Region) -> Result<usize> {
        if word.len() != 8 || word.addr() % 8 != 0 {
            return Err(Error::invalid(
                "emu value",
                format!("{} bytes at {:#x}: not one aligned u64", word.len(), word.addr()),
            ));
        }
        self.dev.check_reach("emu value", word)?;
        Ok(word.addr())
    }
}

/// The value a signal relative to `epoch` carries (see
/// [`EmuStream::write_signal`]); `sig_write` computes the same.
pub fn signal_value(epoch: u64, offset: u64) -> u64 {
    (epoch << 32).wrapping_add(offset)
}

/// Waits until the word at `w` holds at least `value`, consulting `watch`
/// and giving up after `timeout` (failing the operation).
fn wait_word(
    allocs: &super::Allocs,
    w: usize,
    value: u64,
    timeout: Duration,
    what: &str,
    watch: &dyn Watch,
) -> Result<()> {
    // SAFETY: `w` is 8 aligned bytes inside a device allocation (checked when the operation was
    // enqueued), and device memory is freed only after the platform's streams have run.
    let word = unsafe { &*(w as *const AtomicU64) };
    let start = Instant::now();
    let mut looks = 0u32;
    while word.load(Ordering::Acquire) < value {
        looks += 1;
        if looks >= 64 {
            if let Some(why) = watch.stop() {
                return Err(Error::invalid("emu wait", format!("{what}: stopped: {why}")));
            }
            if start.elapsed() > timeout {
                watch.timed_out(start.elapsed());
                return Err(Error::invalid(
                    "emu wait",
                    format!("{what}: the word stayed below {value} for {timeout:?}"),
                ));
            }
        }
        // Spin briefly, then sleep until a word is written: the emulated
        // streams share the host's few cores with the ranks' threads. (The
        // sleep is bounded, for the watch, and because a word written by
        // another process rings no bell here.)
        match looks {
            0..64 => std::hint::spin_loop(),
            _ => allocs.words.sleep_unless(|| word.load(Ordering::Acquire) >= value, Duration::from_micros(100)),
        }
    }
    Ok(())
}

/// A captured stream's work ([`EmuStream::end_capture`]), to be run again
/// as a whole on any stream of the same device (`cuGraphLaunch`): the same
/// operations on the same memory, with the values they read when they run.
pub struct EmuGraph {
    ops: Vec<Op>,
    device: usize,
}

impl EmuGraph {
    /// Enqueues the graph's operations on `stream`, in their order.
    pub fn launch(&self, stream: &EmuStream) -> Result<()> {
        if stream.dev.ordinal() != self.device {
            return Err(Error::invalid(
                "emu graph",
                format!("captured on emu:{}, launched on {}", self.device, stream.dev.name()),
            ));
        }
        for op in &self.ops {
            stream.enqueue(op.clone());
        }
        Ok(())
    }

    /// Operations in the graph.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl Drop for EmuStream {
    fn drop(&mut self) {
        {
            let mut s = self.queue.lock();
            s.closed = true;
            self.queue.changed.notify_all();
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
