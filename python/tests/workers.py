"""What each rank runs in the tests (importable by spawned processes)."""

import threading
import time

import numpy as np

import oxccl

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8]
OPS = ["sum", "prod", "min", "max", "avg"]
COUNTS = [1, 7, 13, 1031]


def value(dtype, rank, n):
    """Rank `rank`'s input: small integers, so every sum is exact."""
    i = np.arange(n)
    if dtype == np.uint8:
        return ((rank * 5 + i) % 7).astype(dtype)
    return (((rank * 7 + i * 3) % 11) - 5).astype(dtype)


def reference(dtype, op, world, n):
    """The ranks' inputs combined under `op`, as oxccl must (NumPy)."""
    terms = np.stack([value(dtype, r, n) for r in range(world)])
    if op == "sum":
        return np.add.reduce(terms, axis=0, dtype=dtype)
    if op == "prod":
        return np.multiply.reduce(terms, axis=0, dtype=dtype)
    if op == "min":
        return terms.min(axis=0)
    if op == "max":
        return terms.max(axis=0)
    total = np.add.reduce(terms, axis=0, dtype=dtype)
    if np.issubdtype(dtype, np.integer):
        return np.trunc(total.astype(np.float64) / world).astype(dtype)
    # f16 divides in f32 and rounds once; f32 and f64 in their own type.
    wide = np.float64 if dtype == np.float64 else np.float32
    return (total.astype(wide) / wide(world)).astype(dtype)


def check(label, got, want):
    if not np.array_equal(got, want):
        bad = np.flatnonzero(got != want)
        raise AssertionError(f"{label}: {len(bad)} wrong, first at {bad[0]}: {got[bad[0]]} != {want[bad[0]]}")


def to_device(array):
    """A copy of `array` in the emulated device's memory (a NumPy view of it)."""
    mem = oxccl.device_buffer(max(array.nbytes, 1))
    out = np.frombuffer(mem, dtype=array.dtype, count=array.size)
    out[:] = array
    return out


def on_the_device():
    """Turns the emulated device on in this rank (before its first call)."""
    import os

    os.environ["OXCCL_DEVICE"] = "emu"


def every_collective(comm, device=False):
    """Every collective, dtype, op and count against NumPy; with `device`,
    every buffer in the emulated device's memory (the GPU collectives)."""
    if device:
        on_the_device()
    place = to_device if device else (lambda a: a)
    r, n = comm.rank, comm.world
    root = n - 1
    for dtype in DTYPES:
        for count in COUNTS:
            ops = OPS if count in (7, 1031) else ["sum", "max"]
            for op in ops:
                label = f"{np.dtype(dtype).name} {op} count {count} rank {r} of {n}"
                want = reference(dtype, op, n, count)
                # all_reduce, out of place and in place
                out = place(np.full(count, 99, dtype))
                comm.all_reduce(place(value(dtype, r, count)), out, op=op)
                check("all_reduce " + label, out, want)
                buf = place(value(dtype, r, count))
                comm.all_reduce(buf, op=op)
                check("all_reduce in place " + label, buf, want)
                # reduce to the last rank
                out = place(np.full(count, 99, dtype))
                comm.reduce(place(value(dtype, r, count)), out, op=op, root=root)
                if r == root:
                    check("reduce " + label, out, want)
                # reduce_scatter: n blocks of count
                whole = reference(dtype, op, n, n * count)
                out = place(np.full(count, 99, dtype))
                comm.reduce_scatter(place(value(dtype, r, n * count)), out, op=op)
                check("reduce_scatter " + label, out, whole[r * count : (r + 1) * count])
                buf = place(value(dtype, r, n * count))
                comm.reduce_scatter(buf, op=op)
                check("reduce_scatter in place " + label, buf[r * count : (r + 1) * count], whole[r * count : (r + 1) * count])
            label = f"{np.dtype(dtype).name} count {count} rank {r} of {n}"
            # all_gather, out of place and in place
            want = np.concatenate([value(dtype, p, count) for p in range(n)])
            out = place(np.full(n * count, 99, dtype))
            comm.all_gather(place(value(dtype, r, count)), out)
            check("all_gather " + label, out, want)
            buf = place(np.full(n * count, 99, dtype))
            buf[r * count : (r + 1) * count] = value(dtype, r, count)
            comm.all_gather(buf)
            check("all_gather in place " + label, buf, want)
            # broadcast from the last rank
            out = place(np.full(count, 99, dtype))
            comm.broadcast(place(value(dtype, r, count)), out, root=root)
            check("broadcast " + label, out, value(dtype, root, count))
            # all_to_all: block p of rank r's input goes to rank p
            send = place(value(dtype, r, n * count))
            out = place(np.full(n * count, 99, dtype))
            comm.all_to_all(send, out)
            want = np.concatenate([value(dtype, p, n * count)[r * count : (r + 1) * count] for p in range(n)])
            check("all_to_all " + label, out, want)
    comm.barrier()


class OnlyDlpack:
    """An object exposing only DLPack (as a torch tensor does)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, *args, **kwargs):
        return self.array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def sends_receives_and_dlpack(comm):
    r, n = comm.rank, comm.world
    big = 1 << 20
    # Every rank sends to every peer before receiving: one group.
    outgoing = {p: np.full(big, r * 10 + p, np.float32) for p in range(n) if p != r}
    incoming = {p: np.zeros(big, np.float32) for p in range(n) if p != r}
    comm.exchange([(b, p) for p, b in outgoing.items()], [(b, p) for p, b in incoming.items()])
    for p, b in incoming.items():
        check(f"exchange from {p}", b, np.full(big, p * 10 + r, np.float32))
    # A ring of plain sends and receives, in an order that cannot deadlock.
    nxt, prv = (r + 1) % n, (r - 1) % n
    got = np.zeros(7, np.int64)
    if r % 2 == 0:
        comm.send(np.arange(7, dtype=np.int64) + r, nxt)
        comm.recv(got, prv)
    else:
        comm.recv(got, prv)
        comm.send(np.arange(7, dtype=np.int64) + r, nxt)
    check("ring", got, np.arange(7, dtype=np.int64) + prv)
    # DLPack: the buffer is the array's memory itself (no copy).
    arr = value(np.float32, r, 1031)
    comm.all_reduce(OnlyDlpack(arr))
    check("dlpack", arr, reference(np.float32, "sum", n, 1031))


def gil_is_released(comm):
    """While rank 0 waits in a collective for a late rank 1, another Python
    thread of rank 0 keeps running."""
    ticks = [0]
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    if comm.rank == 1:
        time.sleep(0.5)
    t = threading.Thread(target=tick)
    t.start()
    before = ticks[0]
    buf = np.ones(4, np.float32)
    comm.all_reduce(buf)
    after = ticks[0]
    stop.set()
    t.join()
    if comm.rank == 0 and after - before < 50:
        raise AssertionError(f"only {after - before} ticks while waiting 0.5 s: the GIL was held")


def bad_input(comm):
    r, n = comm.rank, comm.world
    # Refused before anything moves; the group stays usable.
    for call in [
        lambda: comm.all_reduce(np.zeros(4, np.float32), np.zeros(4, np.int32)),
        lambda: comm.all_reduce(np.zeros(4, np.float32), np.zeros(5, np.float32)),
        lambda: comm.all_reduce(np.zeros((4, 4), np.float32)[:, 0]),  # not contiguous
        lambda: comm.all_reduce(np.zeros(4, np.int16)),  # no oxccl type
        lambda: comm.all_reduce(np.zeros(4, np.float32), op="median"),
        lambda: comm.broadcast(np.zeros(4, np.float32), root=n),
        lambda: comm.all_gather(np.zeros(n * 3 + 1, np.float32)),
        lambda: comm.all_reduce("not a buffer"),
    ]:
        try:
            call()
        except oxccl.InvalidArgument as e:
            assert str(e), "an empty message"
        else:
            raise AssertionError("bad input was accepted")
    buf = np.ones(3, np.float32)
    comm.all_reduce(buf)
    check("usable after bad input", buf, np.full(3, n, np.float32))
    # Sizes that differ across ranks: an error on every rank naming the
    # mismatch or the peer, within the deadline, never a hang.
    try:
        comm.all_reduce(np.ones(10 + r, np.float32))
    except (oxccl.InvalidUsage, oxccl.RemoteError) as e:
        assert "rank" in str(e), str(e)
    else:
        raise AssertionError("a size mismatch across ranks was accepted")
    assert comm.is_aborted and comm.async_error()
    # A closed communicator refuses calls.
    comm.close()
    try:
        comm.barrier()
    except oxccl.InvalidUsage as e:
        assert "closed" in str(e)
    else:
        raise AssertionError("a closed communicator ran a call")


def device_sends_and_mixed_memory(comm):
    """On the emulated device: an exchange with every peer (staged through
    host memory), and a call mixing host and device memory refused on every
    rank, leaving the group usable."""
    on_the_device()
    r, n = comm.rank, comm.world
    big = (1 << 16) + 3
    outgoing = {p: to_device(np.full(big, r * 10 + p, np.float32)) for p in range(n) if p != r}
    incoming = {p: to_device(np.zeros(big, np.float32)) for p in range(n) if p != r}
    comm.exchange([(b, p) for p, b in outgoing.items()], [(b, p) for p, b in incoming.items()])
    for p, b in incoming.items():
        check(f"device exchange from {p}", b, np.full(big, p * 10 + r, np.float32))
    try:
        comm.all_reduce(np.zeros(4, np.float32), to_device(np.zeros(4, np.float32)))
    except oxccl.InvalidArgument as e:
        assert "host memory" in str(e) and "emulated device" in str(e), str(e)
    else:
        raise AssertionError("host and device memory in one call was accepted")
    buf = to_device(np.ones(5, np.float32))
    comm.all_reduce(buf)
    check("usable after mixed memory", buf, np.full(5, n, np.float32))
    # Host memory still works on a communicator bound to the device.
    host = np.ones(3, np.float64)
    comm.all_reduce(host)
    check("host memory on a device communicator", host, np.full(3, n, np.float64))


def shared_memory(comm):
    """Buffers of the communicator's shared memory (peers read them directly),
    in place and out of place, against NumPy."""
    r, n = comm.rank, comm.world
    count = (1 << 18) + 3
    send = np.frombuffer(comm.alloc_shared(count * 4), np.float32, count)
    recv = np.frombuffer(comm.alloc_shared(count * 4), np.float32, count)
    send[:] = value(np.float32, r, count)
    comm.all_reduce(send, recv)
    check("shared all_reduce", recv, reference(np.float32, "sum", n, count))
    comm.all_reduce(send, op="max")
    check("shared all_reduce in place", send, reference(np.float32, "max", n, count))
    assert len(comm.alloc_shared(10)) == 10
