"""Where a small all-reduce's time goes from Python: the native module on a
NumPy view and on a torch tensor (DLPack), the process group's allreduce
and wait, and dist.all_reduce; 2 processes, 8 bytes, medians of 3 rounds.

    python python/bench/overhead.py
"""

import datetime
import socket
import statistics
import time

import torch
import torch.multiprocessing as mp


def per_call_us(f, n=3000):
    f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e6


def main(rank, world, port):
    import torch.distributed as dist

    import oxccl
    import oxccl.torch  # noqa: F401 - registers "oxccl"

    comm = oxccl.Communicator(rank, world, f"127.0.0.1:{port}", timeout=60)
    t = torch.ones(2)
    res = {}
    for _ in range(3):
        res.setdefault("native, NumPy view", []).append(per_call_us(lambda: comm.all_reduce(t.numpy())))
        res.setdefault("native, DLPack", []).append(per_call_us(lambda: comm.all_reduce(t)))
        res.setdefault("native, detach + DLPack", []).append(per_call_us(lambda: comm.all_reduce(t.detach())))
    dist.init_process_group(
        "oxccl", init_method=f"tcp://127.0.0.1:{port + 1}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    pg = dist.distributed_c10d._get_default_group()
    opts = dist.AllreduceOptions()
    for _ in range(3):
        res.setdefault("dist.all_reduce", []).append(per_call_us(lambda: dist.all_reduce(t), 1000))
        res.setdefault("pg.allreduce + wait", []).append(per_call_us(lambda: pg.allreduce([t], opts).wait(), 1000))
    if rank == 0:
        for k, v in res.items():
            print(f"{k:26s} median {statistics.median(v):7.1f} us")
    comm.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(main, args=(2, port), nprocs=2, join=True, start_method="spawn")
