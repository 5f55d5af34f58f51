"""The "oxccl" torch.distributed backend on CUDA tensors (a GPU machine).

    python python/bench/torch_cuda.py [--world 2]

`--world` processes share the machine's GPUs (rank r on GPU r mod count;
on a one-GPU machine they share it). First every collective on CUDA tensors
against its expected value (float32 from small integers: exact), then DDP
trained 20 steps on CUDA with "oxccl" and with "gloo" from the same seed
(parameters must agree within 1e-5 relative), then `dist.all_reduce` of 8 B,
64 KiB and 64 MiB float32 timed with each backend (medians of 5 rounds,
alternating which goes first; NCCL refuses ranks sharing a GPU, so Gloo is
the peer here). Prints "ok" lines; exits 1 on a wrong result.
"""

import argparse
import datetime
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def check(what, got, want):
    if not torch.equal(got.cpu(), want.cpu()):
        bad = (got.cpu() != want.cpu()).nonzero()
        raise AssertionError(f"{what}: {len(bad)} wrong, first at {bad[0].tolist()}")


def collectives(rank, world, dev, group):
    def val(r, n):
        return ((torch.arange(n, device=dev) * 3 + r * 7) % 11 - 5).float()

    for n in [1, 1031, (1 << 20) + 7]:
        total = sum(val(r, n) for r in range(world))
        t = val(rank, n)
        dist.all_reduce(t, group=group)
        check(f"all_reduce {n}", t, total)
        t = val(rank, n)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        check(f"all_reduce max {n}", t, torch.stack([val(r, n) for r in range(world)]).max(0).values)
        out = torch.empty(world * n, device=dev)
        dist.all_gather_into_tensor(out, val(rank, n), group=group)
        check(f"all_gather {n}", out, torch.cat([val(r, n) for r in range(world)]))
        outs = [torch.empty(n, device=dev) for _ in range(world)]
        dist.all_gather(outs, val(rank, n), group=group)
        check(f"all_gather list {n}", torch.cat(outs), torch.cat([val(r, n) for r in range(world)]))
        out = torch.empty(n, device=dev)
        dist.reduce_scatter_tensor(out, val(rank, world * n), group=group)
        whole = sum(val(r, world * n) for r in range(world))
        check(f"reduce_scatter {n}", out, whole[rank * n : (rank + 1) * n])
        t = val(rank, n)
        dist.broadcast(t, src=world - 1, group=group)
        check(f"broadcast {n}", t, val(world - 1, n))
        out = torch.empty(world * n, device=dev)
        dist.all_to_all_single(out, val(rank, world * n), group=group)
        check(f"all_to_all {n}", out, torch.cat([val(r, world * n)[rank * n : (rank + 1) * n] for r in range(world)]))
        # send/recv in a ring
        got = torch.empty(n, device=dev)
        reqs = dist.batch_isend_irecv([
            dist.P2POp(dist.isend, val(rank, n), (rank + 1) % world, group=group),
            dist.P2POp(dist.irecv, got, (rank - 1) % world, group=group),
        ])
        for r in reqs:
            r.wait()
        check(f"send/recv {n}", got, val((rank - 1) % world, n))
    torch.cuda.synchronize()


def ddp(dev, group):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 10), torch.nn.ReLU(), torch.nn.Linear(10, 1)).to(dev)
    d = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index], process_group=group)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    g = torch.Generator(device="cpu").manual_seed(1 + dist.get_rank())
    for _ in range(20):
        x = torch.randn(64, 32, generator=g).to(dev)
        y = x.sum(1, keepdim=True)
        opt.zero_grad()
        torch.nn.functional.mse_loss(d(x), y).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()


def timed(fn, iters, dev):
    fn()
    torch.cuda.synchronize(dev)
    dist.barrier()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize(dev)
    return (time.perf_counter() - t) / iters


def main(rank, world, port):
    import oxccl.torch  # noqa: F401

    dev = torch.device("cuda", rank % torch.cuda.device_count())
    torch.cuda.set_device(dev)
    dist.init_process_group("oxccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    gloo = dist.new_group(backend="gloo")
    collectives(rank, world, dev, None)
    if rank == 0:
        print(f"ok: every collective on CUDA tensors, {world} ranks on {torch.cuda.get_device_name(dev)}", flush=True)
    a, b = ddp(dev, None), ddp(dev, gloo)
    rel = ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item()
    if rel > 1e-5:
        raise AssertionError(f"DDP on CUDA: oxccl and gloo parameters differ by {rel:.2e} relative")
    if rank == 0:
        print(f"ok: DDP 20 steps on CUDA, oxccl vs gloo parameters within {rel:.1e} relative", flush=True)
    sizes = [8, 64 << 10, 64 << 20]
    times = {(b, s): [] for b in ("oxccl", "gloo") for s in sizes}
    groups = {"oxccl": None, "gloo": gloo}
    for rnd in range(5):
        order = ["oxccl", "gloo"] if rnd % 2 == 0 else ["gloo", "oxccl"]
        for s in sizes:
            t = torch.ones(s // 4, device=dev)
            iters = 100 if s <= 64 << 10 else 10
            for b in order:
                times[(b, s)].append(timed(lambda: dist.all_reduce(t, group=groups[b]), iters, dev))
    if rank == 0:
        for s in sizes:
            o, g = statistics.median(times[("oxccl", s)]), statistics.median(times[("gloo", s)])
            print(f"all_reduce {s:>9} B on CUDA: oxccl {o * 1e6:9.1f} us (worst {max(times[('oxccl', s)]) * 1e6:9.1f}) "
                  f"| gloo {g * 1e6:9.1f} us | gloo/oxccl {g / o:5.2f}x | oxccl algbw {s / o / 1e9:6.2f} GB/s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=int, default=2)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("torch_cuda.py: no CUDA device", file=sys.stderr)
        sys.exit(2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(main, args=(args.world, port), nprocs=args.world, join=True, start_method="spawn")
