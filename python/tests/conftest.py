"""Runs a test's ranks as processes: `run_ranks(n, fn, *args)` starts n
processes (spawned), each making rank r of a communicator over a fresh
rendezvous port and calling `fn(comm, *args)`; any rank's exception fails
the test with every rank's traceback, and no test waits forever."""

import multiprocessing as mp
import socket
import traceback

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn, rank, world, port, args, queue):
    try:
        import oxccl

        comm = oxccl.Communicator(rank, world, f"127.0.0.1:{port}", timeout=30)
        fn(comm, *args)
        queue.put((rank, None))
    except BaseException:  # noqa: BLE001 - everything is reported to the parent
        queue.put((rank, traceback.format_exc()))


def run_ranks(world, fn, *args, timeout=180):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(fn, r, world, port, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    failures = []
    results = {}
    try:
        for _ in range(world):
            rank, err = queue.get(timeout=timeout)
            results[rank] = err
    except Exception:  # noqa: BLE001 - a rank that never reports
        failures.append(f"ranks {sorted(set(range(world)) - set(results))} did not finish within {timeout} s")
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    failures += [f"rank {r}:\n{e}" for r, e in sorted(results.items()) if e]
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.fixture
def ranks():
    return run_ranks
