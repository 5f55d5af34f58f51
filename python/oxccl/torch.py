"""The ``"oxccl"`` backend of ``torch.distributed``.

``import oxccl.torch`` registers it; then::

    dist.init_process_group("oxccl")             # under torchrun or mp.spawn, as with "gloo"

It is written against torch's Python extension points (a ``ProcessGroup``
subclass registered with ``dist.Backend.register_backend``), so one wheel
works with any recent torch. Ranks meet through the store torch passes in
(rank 0 publishes where it serves oxccl's rendezvous), and torch's
``timeout`` is oxccl's deadline for every wait.

Collectives run asynchronously, in call order, on a thread of the process
group; each returns a work whose future completes when the collective has
(DDP's bucketed all-reduces therefore overlap its backward pass: oxccl
releases the GIL while it moves data). A call on at most 64 KiB runs on the
caller's thread instead when the group's thread is idle (same order; it
saves two thread hand-offs, about 15 us; ``OXCCL_TORCH_INLINE_BYTES`` sets
the limit, 0 turns it off). Sends and receives are gathered until
a work of theirs is waited for, or a collective comes, and then issued
together (``Communicator.exchange``), so a send/receive pair never deadlocks
whatever its order, as with NCCL's groups (``batch_isend_irecv``).

Supported: all_reduce (sum, product, min, max, avg), all_gather (list) and
all_gather_into_tensor, reduce_scatter (list) and reduce_scatter_tensor,
broadcast, reduce, all_to_all_single (even and uneven splits) and all_to_all
(list), gather, scatter, barrier, send/recv/isend/irecv and
batch_isend_irecv, and the object collectives built on them; ``new_group``,
``destroy_process_group``.

CPU tensors run on the group's thread as above. CUDA tensors go through
oxccl's GPU collectives on the caller's thread (after the group's thread
has run everything before them, so every rank keeps one order): each
collective is enqueued on the tensor's current CUDA stream and its work is
complete at once, as NCCL's is once enqueued — later work on that stream
sees the result. Sends and receives of CUDA tensors are staged through host
memory: wait for their work before using a received tensor.
"""

from __future__ import annotations

import datetime
import os
import queue
import socket
import threading

import torch
import torch.distributed as dist
from torch.futures import Future

from . import Communicator

__all__ = ["OxcclProcessGroup"]

_REDUCE = {
    dist.ReduceOp.SUM: "sum",
    dist.ReduceOp.PRODUCT: "prod",
    dist.ReduceOp.MIN: "min",
    dist.ReduceOp.MAX: "max",
    dist.ReduceOp.AVG: "avg",
}


def _op_name(opts) -> str:
    op = opts.reduceOp
    for k, v in _REDUCE.items():
        if op == k:
            return v
    raise ValueError(f"oxccl: reduction {op} is not supported (sum, product, min, max, avg)")


def _host() -> str:
    """This host's address as other hosts reach it (see oxcclGetUniqueId)."""
    if os.environ.get("OXCCL_ID_HOST", "").strip():
        return os.environ["OXCCL_ID_HOST"].strip()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # sends nothing: picks the route's address
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        try:
            s.bind((host, 0))
        except OSError:
            s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _plain(t: torch.Tensor) -> torch.Tensor:
    """The tensor as oxccl takes it: its own memory, without autograd."""
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"oxccl: a tensor on {t.device} (CPU and CUDA tensors only)")
    return t.detach()


# Calls on at most this many bytes run on the caller's thread when the group's worker is idle
# (OXCCL_TORCH_INLINE_BYTES overrides; 0: never): the hand-off to the worker and back costs more
# than such a call. Larger calls stay asynchronous, so DDP's buckets overlap its backward pass.
_INLINE_BYTES = 64 << 10


def _settle(fn, fut: Future, result):
    """Runs `fn`; `fut` completes with `result`, or with its exception (for whoever waits)."""
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - handed to whoever waits
        fut.set_exception(e)
    else:
        fut.set_result(result)


def _nbytes(obj) -> int:
    """The bytes of every tensor in `obj` (a tensor or nested lists of them)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(x) for x in obj)
    return 0


def _device_of(obj):
    """The device of the first tensor in `obj` (a tensor or nested lists of
    them), or None."""
    if isinstance(obj, torch.Tensor):
        return obj.device
    if isinstance(obj, (list, tuple)):
        for x in obj:
            d = _device_of(x)
            if d is not None:
                return d
    return None


class _Contiguous:
    """A contiguous stand-in for `t` (itself when it is), written back to `t`
    on `done` when it was a copy."""

    def __init__(self, t: torch.Tensor):
        self.t = _plain(t)
        self.buf = self.t if self.t.is_contiguous() else self.t.contiguous()

    def done(self):
        if self.buf is not self.t:
            self.t.copy_(self.buf)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


class _Work(dist._Work):
    """A collective's work: its future completes (or fails, with oxccl's
    exception) when the worker has run it; `wait` raises that exception."""

    def __init__(self, fut: Future, result):
        super().__init__()
        self._fut, self._result = fut, result

    def wait(self, timeout=datetime.timedelta(0)):
        self._fut.wait()
        return True

    def is_completed(self):
        return self._fut.done()

    def is_success(self):
        if not self._fut.done():
            return False
        try:
            self._fut.wait()
        except Exception:  # noqa: BLE001
            return False
        return True

    def exception(self):
        try:
            self._fut.wait()
        except Exception as e:  # noqa: BLE001
            return e
        return None

    def get_future(self):
        return self._fut

    def result(self):
        return self._result


class _P2pWork(_Work):
    """A send's or receive's work: waiting for it (or asking for its future)
    first issues the transfers gathered so far."""

    def __init__(self, pg: "OxcclProcessGroup", fut: Future, result):
        super().__init__(fut, result)
        self._pg = pg

    def wait(self, timeout=datetime.timedelta(0)):
        self._pg._flush()
        return super().wait(timeout)

    def get_future(self):
        self._pg._flush()
        return self._fut


class OxcclProcessGroup(dist.ProcessGroup):
    """One rank of a group of the "oxccl" backend (see the module docs)."""

    def __init__(self, store, rank: int, size: int, timeout: datetime.timedelta):
        super().__init__(rank, size)
        seconds = timeout.total_seconds() if timeout else 300.0
        if rank == 0:
            host = _host()
            store.set("oxccl/master", f"{host}:{_free_port(host)}")
        master = store.get("oxccl/master").decode()
        self._comm = Communicator(rank, size, master, timeout=seconds)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list = []  # transfers gathered by the worker, not yet issued
        # The CUDA stream the calls being run are ordered on (0: host memory, or the default).
        self._stream = 0
        # Work items handed to the worker, and those it has finished (sends and receives once
        # issued): equal when it is idle with nothing gathered, so a small call may run on the
        # caller's thread without changing the order.
        self._submitted = 0
        self._completed = 0
        self._inline_bytes = int(os.environ.get("OXCCL_TORCH_INLINE_BYTES", _INLINE_BYTES))
        self._thread = threading.Thread(target=self._work, name=f"oxccl-pg-rank{rank}", daemon=True)
        self._thread.start()

    # ---- the worker ---------------------------------------------------------

    def _work(self):
        while True:
            item = self._queue.get()
            if item is None:
                self._issue_pending()
                return
            kind = item[0]
            if kind == "p2p":
                self._pending.append(item)
                continue
            self._issue_pending()
            if kind == "flush":
                continue
            _, fn, fut, result = item
            try:
                _settle(fn, fut, result)
            finally:
                self._completed += 1

    def _issue_pending(self):
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        sends = [(b.buf, peer) for (_, send, b, peer, _, _, _) in batch if send]
        recvs = [(b.buf, peer) for (_, send, b, peer, _, _, _) in batch if not send]
        stream = next((st for (*_, st) in batch if st), 0)
        try:
            self._comm.exchange(sends, recvs, stream=stream)
            for _, send, b, _, _, _, _ in batch:
                if not send:
                    b.done()
        except BaseException as e:  # noqa: BLE001
            for *_, fut, _, _ in batch:
                fut.set_exception(e)
            return
        finally:
            # Only now: a call on the caller's thread must not overtake these transfers.
            self._completed += len(batch)
        for *_, fut, result, _ in batch:
            fut.set_result(result)

    def _submit(self, fn, result):
        fut = Future()
        device = _device_of(result)
        if device is not None and device.type == "cuda":
            # On this thread, once the worker has run everything before it, ordered on the
            # tensor's current stream.
            done = Future()
            self._submitted += 1
            self._queue.put(("coll", lambda: None, done, None))
            done.wait()
            self._stream = torch.cuda.current_stream(device).cuda_stream
            try:
                _settle(fn, fut, result)
            finally:
                self._stream = 0
            return _Work(fut, result)
        if self._completed == self._submitted and _nbytes(result) <= self._inline_bytes:
            # The worker is idle: a small call runs here, saving two thread hand-offs.
            _settle(fn, fut, result)
            return _Work(fut, result)
        self._submitted += 1
        self._queue.put(("coll", fn, fut, result))
        return _Work(fut, result)

    def _p2p(self, send: bool, tensors, peer: int):
        if len(tensors) != 1:
            raise ValueError("oxccl: send and recv take one tensor")
        fut = Future()
        t = tensors[0]
        stream = torch.cuda.current_stream(t.device).cuda_stream if t.device.type == "cuda" else 0
        self._submitted += 1
        self._queue.put(("p2p", send, _Contiguous(t), peer, fut, tensors, stream))
        return _P2pWork(self, fut, tensors)

    def _flush(self):
        self._queue.put(("flush",))

    # ---- torch.distributed's interface -------------------------------------

    def getBackendName(self):
        return "oxccl"

    # torch asks a group for its backend per device (batch_isend_irecv does,
    # to see whether it coalesces): this group is its own backend.
    supports_coalescing = False

    def _get_backend(self, device=None):
        return self

    def allreduce(self, tensors, opts=None):
        op = _op_name(opts) if opts is not None else "sum"
        bufs = [_Contiguous(t) for t in tensors]

        def run():
            for b in bufs:
                self._comm.all_reduce(b.buf, op=op, stream=self._stream)
                b.done()

        return self._submit(run, tensors)

    def allreduce_coalesced(self, tensors, opts=None):
        return self.allreduce(tensors, opts)

    def broadcast(self, tensors, opts):
        root = opts.rootRank
        bufs = [_Contiguous(t) for t in tensors]

        def run():
            for b in bufs:
                self._comm.broadcast(b.buf, root=root, stream=self._stream)
                b.done()

        return self._submit(run, tensors)

    def reduce(self, tensors, opts):
        root, op = opts.rootRank, _op_name(opts)
        bufs = [_Contiguous(t) for t in tensors]

        def run():
            for b in bufs:
                # Ranks other than the root keep their input: they reduce a copy.
                src = b.buf if self.rank() == root else b.buf.clone()
                self._comm.reduce(src, op=op, root=root, stream=self._stream)
                b.done()

        return self._submit(run, tensors)

    def allgather(self, output_tensors, input_tensors, opts=None):
        ins = [_Contiguous(t) for t in input_tensors]
        outs = [[_plain(o) for o in out] for out in output_tensors]

        def run():
            for b, out in zip(ins, outs):
                whole = torch.empty(len(out) * b.buf.numel(), dtype=b.buf.dtype, device=b.buf.device)
                self._comm.all_gather(_flat(b.buf), whole, stream=self._stream)
                for p, o in enumerate(out):
                    o.copy_(whole[p * b.buf.numel() : (p + 1) * b.buf.numel()].view_as(o))

        return self._submit(run, output_tensors)

    def allgather_coalesced(self, output_lists, input_list, opts=None):
        return self.allgather(output_lists, input_list, opts)

    def all_gather_single(self, output, input, opts=None):
        o, i = _Contiguous(output), _Contiguous(input)

        def run():
            self._comm.all_gather(_flat(i.buf), _flat(o.buf), stream=self._stream)
            o.done()

        return self._submit(run, output)

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None):
        works = [self.all_gather_single(o, i, opts) for o, i in zip(outputs, inputs)]
        return works[-1]

    def all_gather_single_coalesced(self, outputs, inputs, opts=None):
        return self.allgather_into_tensor_coalesced(outputs, inputs, opts)

    def reduce_scatter(self, output_tensors, input_tensors, opts):
        op = _op_name(opts)
        outs = [_Contiguous(t) for t in output_tensors]
        ins = [[_plain(t) for t in lst] for lst in input_tensors]

        def run():
            for o, lst in zip(outs, ins):
                whole = torch.cat([_flat(t) for t in lst])
                self._comm.reduce_scatter(whole, _flat(o.buf), op=op, stream=self._stream)
                o.done()

        return self._submit(run, output_tensors)

    def reduce_scatter_single(self, output, input, opts):
        op = _op_name(opts)
        o, i = _Contiguous(output), _Contiguous(input)

        def run():
            self._comm.reduce_scatter(_flat(i.buf), _flat(o.buf), op=op, stream=self._stream)
            o.done()

        return self._submit(run, output)

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts):
        works = [self.reduce_scatter_single(o, i, opts) for o, i in zip(outputs, inputs)]
        return works[-1]

    def reduce_scatter_single_coalesced(self, outputs, inputs, opts):
        return self.reduce_scatter_tensor_coalesced(outputs, inputs, opts)

    def _exchange_blocks(self, sends, recvs, own):
        """Sends `sends`, receives `recvs` ((tensor, peer) each) together and
        copies `own` ((dst, src) pairs) locally."""
        for dst, src in own:
            dst.copy_(src)
        self._comm.exchange(sends, recvs, stream=self._stream)

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        o, i = _Contiguous(output), _Contiguous(input)
        n, me = self.size(), self.rank()

        def run():
            if not output_split_sizes and not input_split_sizes:
                self._comm.all_to_all(_flat(i.buf), _flat(o.buf), stream=self._stream)
            else:
                rows_in = i.buf.shape[0] if i.buf.dim() else 1
                rows_out = o.buf.shape[0] if o.buf.dim() else 1
                isz = list(input_split_sizes) or [rows_in // n] * n
                osz = list(output_split_sizes) or [rows_out // n] * n
                ins = torch.split(i.buf, isz) if i.buf.dim() else [i.buf]
                outs = torch.split(o.buf, osz) if o.buf.dim() else [o.buf]
                sends = [(ins[p], p) for p in range(n) if p != me]
                recvs = [(outs[p], p) for p in range(n) if p != me]
                self._exchange_blocks(sends, recvs, [(outs[me], ins[me])])
            o.done()

        return self._submit(run, output)

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        return self.all_to_all_single(output, input, output_split_sizes, input_split_sizes, opts)

    def alltoall(self, output_tensors, input_tensors, opts=None):
        n, me = self.size(), self.rank()
        outs = [_Contiguous(t) for t in output_tensors]
        ins = [_Contiguous(t) for t in input_tensors]

        def run():
            sends = [(ins[p].buf, p) for p in range(n) if p != me]
            recvs = [(outs[p].buf, p) for p in range(n) if p != me]
            self._exchange_blocks(sends, recvs, [(outs[me].buf, ins[me].buf)])
            for o in outs:
                o.done()

        return self._submit(run, output_tensors)

    def gather(self, output_tensors, input_tensors, opts):
        root, n, me = opts.rootRank, self.size(), self.rank()
        i = _Contiguous(input_tensors[0])
        outs = [_Contiguous(t) for t in output_tensors[0]] if me == root else []

        def run():
            if me == root:
                recvs = [(outs[p].buf, p) for p in range(n) if p != me]
                self._exchange_blocks([], recvs, [(outs[me].buf, i.buf)])
                for o in outs:
                    o.done()
            else:
                self._comm.exchange([(i.buf, root)], [], stream=self._stream)

        return self._submit(run, output_tensors)

    def scatter(self, output_tensors, input_tensors, opts):
        root, n, me = opts.rootRank, self.size(), self.rank()
        o = _Contiguous(output_tensors[0])
        ins = [_Contiguous(t) for t in input_tensors[0]] if me == root else []

        def run():
            if me == root:
                sends = [(ins[p].buf, p) for p in range(n) if p != me]
                self._exchange_blocks(sends, [], [(o.buf, ins[me].buf)])
            else:
                self._comm.exchange([], [(o.buf, root)], stream=self._stream)
            o.done()

        return self._submit(run, output_tensors)

    def barrier(self, opts=None):
        return self._submit(self._comm.barrier, None)

    def send(self, tensors, dstRank, tag=0):
        return self._p2p(True, tensors, dstRank)

    def recv(self, tensors, srcRank, tag=0):
        return self._p2p(False, tensors, srcRank)

    def recv_anysource(self, tensors, tag=0):
        raise RuntimeError("oxccl: receiving from any source is not supported (name the peer)")

    def shutdown(self):
        """Stops the worker after the queued work, and frees the communicator."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._comm.close()

    def abort(self):
        """Aborts the group (every rank's waits end with an error) and stops."""
        self._comm.abort("aborted through torch.distributed")
        self.shutdown()

    def __repr__(self):
        return f"OxcclProcessGroup(rank={self.rank()}, size={self.size()}, {self._comm!r})"


def _create(store, rank, size, timeout):
    return OxcclProcessGroup(store, rank, size, timeout)


dist.Backend.register_backend("oxccl", _create, devices=["cpu", "cuda"])
