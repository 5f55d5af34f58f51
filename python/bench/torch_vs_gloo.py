"""dist.all_reduce and a DDP step on "oxccl" beside "gloo" in one job.

    python python/bench/torch_vs_gloo.py [--world 2] [--rounds 7]

Each round times every size on both backends, alternating which goes first,
so a change of the machine's state hits both; prints per size the median
and worst of the rounds for each backend and their ratio of medians. Then a
DDP step (forward, backward with bucketed all-reduces, SGD) on a model with
`--ddp-mb` MiB of float32 gradients, samples/s on each backend. And the
Python overhead: the same 8-byte all-reduce through oxccl.Communicator
directly (no torch) and through torch.distributed.

Each process computes on `--threads` threads (default: the cores divided by
the processes, as torchrun's OMP_NUM_THREADS=1 on a full machine): more
than that oversubscribes the cores, and both backends' steps then mostly
measure threads waiting for each other (0 keeps torch's default).
"""

import argparse
import datetime
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def timed(fn, iters):
    fn()
    dist.barrier()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def main(rank, world, port, args):
    import oxccl
    import oxccl.torch  # noqa: F401

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    dist.init_process_group(
        "oxccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    gloo = dist.new_group(backend="gloo")
    groups = {"oxccl": None, "gloo": gloo}
    sizes = [8, 64 << 10, 64 << 20]
    times = {(b, s): [] for b in groups for s in sizes}
    for rnd in range(args.rounds):
        order = list(groups) if rnd % 2 == 0 else list(groups)[::-1]
        for size in sizes:
            t = torch.ones(size // 4)
            iters = 200 if size <= 64 << 10 else 5
            for b in order:
                times[(b, size)].append(timed(lambda: dist.all_reduce(t, group=groups[b]), iters))
    # Python overhead: the same call straight through the native module.
    comm = oxccl.Communicator(rank, world, f"127.0.0.1:{port + 1}", timeout=60)
    small = torch.ones(2)
    raw = [timed(lambda: comm.all_reduce(small), 2000) for _ in range(args.rounds)]
    # DDP step.
    width = 1024
    layers = max(1, int(args.ddp_mb * (1 << 20) / 4 / (width * width)))
    ddp_times = {b: [] for b in groups}
    for rnd in range(max(3, args.rounds // 2)):
        order = list(groups) if rnd % 2 == 0 else list(groups)[::-1]
        for b in order:
            torch.manual_seed(0)
            model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
            ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=groups[b], bucket_cap_mb=args.bucket_mb)
            opt = torch.optim.SGD(ddp.parameters(), lr=1e-4)
            x = torch.randn(args.batch, width)

            def step():
                opt.zero_grad()
                ddp(x).square().mean().backward()
                opt.step()

            ddp_times[b].append(timed(step, 5))
    if rank == 0:
        def fmt(xs):
            return f"median {statistics.median(xs) * 1e6:10.1f} us  worst {max(xs) * 1e6:10.1f} us"

        print(f"# {world} processes, {args.rounds} rounds alternating the backends; torch {torch.__version__}, "
              f"{torch.get_num_threads()} compute threads per process")
        for s in sizes:
            o, g = times[("oxccl", s)], times[("gloo", s)]
            print(f"all_reduce {s:>10} B  oxccl {fmt(o)} | gloo {fmt(g)} | gloo/oxccl {statistics.median(g) / statistics.median(o):5.2f}x"
                  f"  oxccl algbw {s / statistics.median(o) / 1e9:6.2f} GB/s")
        print(f"oxccl.Communicator.all_reduce 8 B (no torch): {fmt(raw)}")
        n_params = layers * (width * width + width)
        for b in groups:
            xs = ddp_times[b]
            print(f"DDP step, {layers} x Linear({width}) = {n_params * 4 / (1 << 20):.1f} MiB of gradients, batch {args.batch}, buckets {args.bucket_mb} MB: "
                  f"{b:5} median {statistics.median(xs) * 1e3:8.1f} ms ({args.batch * world / statistics.median(xs):8.0f} samples/s), worst {max(xs) * 1e3:8.1f} ms")
        o, g = statistics.median(ddp_times["oxccl"]), statistics.median(ddp_times["gloo"])
        print(f"DDP samples/s oxccl/gloo: {g / o:.2f}x")
    comm.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--ddp-mb", type=float, default=16.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--bucket-mb", type=float, default=25.0, help="DDP's bucket_cap_mb (25: its default)")
    p.add_argument("--threads", type=int, default=-1,
                   help="torch compute threads per process (default: cores / world, at least 1; 0: torch's default)")
    args = p.parse_args()
    if args.threads < 0:
        args.threads = max(1, (os.cpu_count() or 1) // args.world)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(main, args=(args.world, port, args), nprocs=args.world, join=True, start_method="spawn")
