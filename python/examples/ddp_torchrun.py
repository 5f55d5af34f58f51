"""DDP training on the "oxccl" backend.

    torchrun --nproc_per_node 2 python/examples/ddp_torchrun.py

The seed's model (Dense(10, relu, input 32) -> Dense(1)), Adam, MSE, on a
synthetic regression, 50 steps; rank 0 prints the loss as it falls.
"""

import torch
import torch.distributed as dist

import oxccl.torch  # noqa: F401 - registers "oxccl"

dist.init_process_group("oxccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 10), torch.nn.ReLU(), torch.nn.Linear(10, 1))
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
w = torch.randn(32, 1, generator=torch.Generator().manual_seed(7))
data = torch.Generator().manual_seed(100 + rank)
first = last = None
for step in range(50):
    x = torch.randn(64, 32, generator=data)
    loss = torch.nn.functional.mse_loss(ddp(x), x @ w)
    opt.zero_grad()
    loss.backward()
    opt.step()
    avg = loss.detach().clone()
    dist.all_reduce(avg, op=dist.ReduceOp.AVG)
    first = avg.item() if first is None else first
    last = avg.item()
    if rank == 0 and step % 10 == 0:
        print(f"step {step:3d} loss {last:.4f}", flush=True)
if rank == 0:
    print(f"loss {first:.4f} -> {last:.4f} on {world} ranks over oxccl", flush=True)
assert last < first / 2, (first, last)
dist.destroy_process_group()
