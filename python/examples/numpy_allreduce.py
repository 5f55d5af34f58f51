"""All-reduce of NumPy arrays between processes.

    oxccl run -n 2 -- python python/examples/numpy_allreduce.py

Each rank makes its communicator from the launcher's environment (oxccl
run, mpirun, srun or torchrun set it), sums an array over the ranks in
place, gathers every rank's array, and checks both.
"""

import numpy as np

import oxccl

comm = oxccl.Communicator.from_env()
r, n = comm.rank, comm.world
x = np.full(1 << 20, r + 1, dtype=np.float32)
comm.all_reduce(x)  # in place
assert (x == n * (n + 1) / 2).all()
everyone = np.empty(n * 4, dtype=np.int64)
comm.all_gather(np.full(4, r, dtype=np.int64), everyone)
assert (everyone == np.repeat(np.arange(n), 4)).all()
print(f"rank {r} of {n} over {comm.transport}: sum {x[0]:.0f}, gathered {everyone.tolist()}", flush=True)
comm.close()
