"""What each rank runs in the torch backend's tests (importable by spawned
processes): every operation on "oxccl" beside "gloo" in the same job, DDP
on both from one seed, bad input."""

import datetime

import numpy as np
import torch
import torch.distributed as dist

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8]
COUNTS = [1, 7, 1031]
OPS = {"sum": dist.ReduceOp.SUM, "product": dist.ReduceOp.PRODUCT, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}


def init(rank, world, port):
    import oxccl.torch  # noqa: F401 - registers the backend

    dist.init_process_group(
        "oxccl",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    return dist.new_group(backend="gloo")


def value(dtype, rank, n, salt=0):
    """Small integers, so every result is exact in every dtype."""
    i = torch.arange(n)
    if dtype == torch.uint8:
        return ((rank * 5 + i + salt) % 7).to(dtype)
    return (((rank * 7 + i * 3 + salt) % 11) - 5).to(dtype)


def same(label, a, b):
    if not torch.equal(a, b):
        bad = (a != b).nonzero()
        raise AssertionError(f"{label}: {len(bad)} differ, first at {bad[0].tolist()}: {a[tuple(bad[0])]} vs {b[tuple(bad[0])]}")


def reference(dtype, op, world, n):
    """NumPy's reduction, where Gloo lacks the op or the dtype."""
    terms = np.stack([value(dtype, r, n).float().numpy().astype(np.float64) for r in range(world)])
    out = {"sum": terms.sum(0), "product": terms.prod(0), "min": terms.min(0), "max": terms.max(0)}.get(op)
    if op == "avg":
        total = terms.sum(0)
        out = np.trunc(total / world) if not dtype.is_floating_point else total / world
    return torch.from_numpy(out).to(dtype)


def run_both(fn, gloo, label, dtype):
    """fn(group) on oxccl (default group) and gloo; returns both results.
    Where Gloo refuses the dtype or op, returns None for it."""
    mine = fn(None)
    try:
        theirs = fn(gloo)
    except (RuntimeError, ValueError):
        theirs = None
    return mine, theirs


def every_operation(rank, world, port):
    gloo = init(rank, world, port)
    n = world
    for dtype in DTYPES:
        for count in COUNTS:
            for name, op in OPS.items():
                if name == "product" and dtype in (torch.uint8,):
                    continue
                label = f"all_reduce {name} {dtype} {count}"

                def ar(g, op=op):
                    t = value(dtype, rank, count)
                    dist.all_reduce(t, op=op, group=g)
                    return t

                mine, theirs = run_both(ar, gloo, label, dtype)
                same(label, mine, theirs if theirs is not None else reference(dtype, name, n, count))

                def red(g, op=op):
                    t = value(dtype, rank, count)
                    dist.reduce(t, dst=n - 1, op=op, group=g)
                    return t

                mine, theirs = run_both(red, gloo, label, dtype)
                if rank == n - 1:
                    same("reduce " + label, mine, theirs if theirs is not None else reference(dtype, name, n, count))
                else:
                    same("reduce leaves a non-root's input " + label, mine, value(dtype, rank, count))

                def rs(g, op=op):
                    out = torch.zeros(count, dtype=dtype)
                    dist.reduce_scatter_tensor(out, value(dtype, rank, n * count), op=op, group=g)
                    return out

                def rsl(g, op=op):
                    out = torch.zeros(count, dtype=dtype)
                    dist.reduce_scatter(out, list(value(dtype, rank, n * count).chunk(n)), op=op, group=g)
                    return out

                want = reference(dtype, name, n, n * count)[rank * count : (rank + 1) * count]
                for f, what in [(rs, "reduce_scatter_tensor"), (rsl, "reduce_scatter")]:
                    mine, theirs = run_both(f, gloo, label, dtype)
                    same(f"{what} {label}", mine, theirs if theirs is not None else want)
            # avg: Gloo has none; against NumPy.
            t = value(dtype, rank, count)
            dist.all_reduce(t, op=dist.ReduceOp.AVG)
            same(f"all_reduce avg {dtype} {count}", t, reference(dtype, "avg", n, count))
            label = f"{dtype} {count}"

            def ag(g):
                outs = [torch.zeros(count, dtype=dtype) for _ in range(n)]
                dist.all_gather(outs, value(dtype, rank, count), group=g)
                return torch.cat(outs)

            def agt(g):
                out = torch.zeros(n * count, dtype=dtype)
                dist.all_gather_into_tensor(out, value(dtype, rank, count), group=g)
                return out

            def bc(g):
                t = value(dtype, rank, count)
                dist.broadcast(t, src=n - 1, group=g)
                return t

            def a2a(g):
                out = torch.zeros(n * count, dtype=dtype)
                dist.all_to_all_single(out, value(dtype, rank, n * count), group=g)
                return out

            def a2a_uneven(g):
                ins = [r + 1 for r in range(n)]
                inp = torch.cat([value(dtype, rank, p + 1, salt=p) for p in range(n)])
                out = torch.zeros(n * (rank + 1), dtype=dtype)
                dist.all_to_all_single(out, inp, [rank + 1] * n, ins, group=g)
                return out

            def a2al(g):
                outs = [torch.zeros(count, dtype=dtype) for _ in range(n)]
                dist.all_to_all(outs, list(value(dtype, rank, n * count).chunk(n)), group=g)
                return torch.cat(outs)

            def gat(g):
                outs = [torch.zeros(count, dtype=dtype) for _ in range(n)] if rank == 0 else None
                dist.gather(value(dtype, rank, count), outs, dst=0, group=g)
                return torch.cat(outs) if outs else torch.zeros(0, dtype=dtype)

            def sca(g):
                out = torch.zeros(count, dtype=dtype)
                ins = list(value(dtype, rank, n * count).chunk(n)) if rank == 0 else None
                dist.scatter(out, ins, src=0, group=g)
                return out

            expected = {
                "all_gather": torch.cat([value(dtype, p, count) for p in range(n)]),
                "all_gather_into_tensor": torch.cat([value(dtype, p, count) for p in range(n)]),
                "broadcast": value(dtype, n - 1, count),
                "all_to_all_single": torch.cat([value(dtype, p, n * count)[rank * count : (rank + 1) * count] for p in range(n)]),
                "all_to_all_single uneven": torch.cat([value(dtype, p, rank + 1, salt=rank) for p in range(n)]),
                "all_to_all": torch.cat([value(dtype, p, n * count)[rank * count : (rank + 1) * count] for p in range(n)]),
                "gather": torch.cat([value(dtype, p, count) for p in range(n)]) if rank == 0 else torch.zeros(0, dtype=dtype),
                "scatter": value(dtype, 0, n * count)[rank * count : (rank + 1) * count],
            }
            for f, what in [(ag, "all_gather"), (agt, "all_gather_into_tensor"), (bc, "broadcast"),
                            (a2a, "all_to_all_single"), (a2a_uneven, "all_to_all_single uneven"),
                            (a2al, "all_to_all"), (gat, "gather"), (sca, "scatter")]:
                mine, theirs = run_both(f, gloo, label, dtype)
                same(f"{what} {label}", mine, theirs if theirs is not None else expected[what])
                same(f"{what} {label} (closed form)", mine, expected[what])
    # Objects, barriers, sends and receives.
    objs = [None] * n
    dist.all_gather_object(objs, {"rank": rank, "list": list(range(rank))})
    assert objs == [{"rank": p, "list": list(range(p))} for p in range(n)], objs
    box = [{"from": rank}] if rank == 0 else [None]
    dist.broadcast_object_list(box, src=0)
    assert box == [{"from": 0}], box
    dist.barrier()
    nxt, prv = (rank + 1) % n, (rank - 1) % n
    big = 1 << 20
    got = torch.zeros(big)
    reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, torch.full((big,), float(rank)), nxt),
                                   dist.P2POp(dist.irecv, got, prv)])
    for r in reqs:
        r.wait()
    same("batch_isend_irecv", got, torch.full((big,), float(prv)))
    # isend then irecv, waited for together (the order does not matter).
    got = torch.zeros(big)
    s = dist.isend(torch.full((big,), float(rank + 10)), nxt)
    r = dist.irecv(got, prv)
    r.wait()
    s.wait()
    same("isend/irecv", got, torch.full((big,), float(prv + 10)))
    if rank == 0:
        dist.send(torch.arange(5.0), 1)
    elif rank == 1:
        t = torch.zeros(5)
        dist.recv(t, 0)
        same("send/recv", t, torch.arange(5.0))
    # A sub-group of the first two ranks.
    sub = dist.new_group([0, 1], backend="oxccl")
    if rank < 2:
        t = torch.ones(3) * (rank + 1)
        dist.all_reduce(t, group=sub)
        same("sub-group", t, torch.full((3,), 3.0))
    dist.barrier()
    dist.destroy_process_group()


def ddp_matches_gloo(rank, world, port, steps=20):
    gloo = init(rank, world, port)
    results = []
    for group in (None, gloo):
        torch.manual_seed(1234)
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
        ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=group, bucket_cap_mb=0.01)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(99 + rank)
        for _ in range(steps):
            x = torch.randn(16, 32, generator=g)
            y = x.sum(1, keepdim=True)
            opt.zero_grad()
            torch.nn.functional.mse_loss(ddp(x), y).backward()
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        rel = ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
        assert rel <= 1e-5, f"oxccl and gloo parameters differ by {rel:.2e} relative"
    dist.destroy_process_group()


def bad_input(rank, world, port):
    init(rank, world, port)
    # A dtype oxccl has no type for: a clear error, nothing sent.
    try:
        dist.all_reduce(torch.ones(4, dtype=torch.int16))
    except Exception as e:  # noqa: BLE001
        assert "int16" in str(e) or "type" in str(e), str(e)
    else:
        raise AssertionError("int16 was accepted")
    # Output and input of different dtypes.
    try:
        dist.all_gather_into_tensor(torch.zeros(2 * world, dtype=torch.int32), torch.ones(2))
    except Exception as e:  # noqa: BLE001
        assert str(e)
    else:
        raise AssertionError("mixed dtypes were accepted")
    # Still usable.
    t = torch.ones(3)
    dist.all_reduce(t)
    same("usable after bad input", t, torch.full((3,), float(world)))
    # Sizes that differ across ranks: an error on every rank, never a hang.
    try:
        dist.all_reduce(torch.ones(10 + rank))
    except Exception as e:  # noqa: BLE001
        assert "rank" in str(e), str(e)
    else:
        raise AssertionError("a size mismatch across ranks was accepted")
    dist.destroy_process_group()
    # A destroyed group refuses calls.
    try:
        dist.all_reduce(torch.ones(2))
    except Exception as e:  # noqa: BLE001
        assert str(e)
    else:
        raise AssertionError("a destroyed group ran a call")
