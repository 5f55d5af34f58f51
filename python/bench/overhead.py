"""Where a small all-reduce's time goes from Python: the native module on a
NumPy view and on a torch tensor (DLPack), the process group's allreduce and
wait, and dist.all_reduce; 2 processes, 8 bytes, medians of 3 rounds.

    python python/bench/overhead.py
"""
import socket, time, statistics, torch, torch.multiprocessing as mp, datetime
def main(rank, world, port):
    import oxccl, oxccl.torch, torch.distributed as dist
    comm = oxccl.Communicator(rank, world, f"127.0.0.1:{port}", timeout=60)
    t = torch.ones(2)
    def timeit(f, n=3000):
        f(); 
        s = time.perf_counter()
        for _ in range(n): f()
        return (time.perf_counter() - s) / n * 1e6
    res = {}
    for rnd in range(3):
        res.setdefault("numpy view", []).append(timeit(lambda: comm.all_reduce(t.numpy())))
        res.setdefault("dlpack tensor", []).append(timeit(lambda: comm.all_reduce(t)))
        res.setdefault("detach + dlpack", []).append(timeit(lambda: comm.all_reduce(t.detach())))
    dist.init_process_group("oxccl", init_method=f"tcp://127.0.0.1:{port+1}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    pg = dist.distributed_c10d._get_default_group()
    for rnd in range(3):
        res.setdefault("dist.all_reduce", []).append(timeit(lambda: dist.all_reduce(t), 1000))
        opts = dist.AllreduceOptions()
        res.setdefault("pg.allreduce+wait", []).append(timeit(lambda: pg.allreduce([t], opts).wait(), 1000))
    if rank == 0:
        for k, v in res.items(): print(f"{k:20s} median {statistics.median(v):7.1f} us")
    dist.destroy_process_group()
if __name__ == "__main__":
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    mp.start_processes(main, args=(2, port), nprocs=2, join=True, start_method="spawn")
