"""oxccl: collective communication (all-reduce and friends) for Python.

A :class:`Communicator` is one rank of a group::

    import numpy as np, oxccl
    comm = oxccl.Communicator.from_env()        # under oxccl run, mpirun, srun, torchrun
    # or oxccl.Communicator(rank, world, "host:port")
    x = np.arange(1000, dtype=np.float32)
    comm.all_reduce(x)                          # in place: x is now the sum over ranks

Collectives take anything exposing the buffer protocol (NumPy arrays,
bytearray, memoryview) or DLPack (torch tensors on the CPU), contiguous,
without copying; the GIL is released while they run. Failures raise
:class:`oxccl.Error` subclasses whose message names the call, its sequence
number and the peer. ``import oxccl.torch`` registers the ``"oxccl"``
backend of ``torch.distributed``.
"""

from ._oxccl import (
    Communicator,
    Error,
    InternalError,
    InvalidArgument,
    InvalidUsage,
    RemoteError,
    SystemError,
    Timeout,
    __version__,
)

__all__ = [
    "Communicator",
    "Error",
    "InternalError",
    "InvalidArgument",
    "InvalidUsage",
    "RemoteError",
    "SystemError",
    "Timeout",
    "__version__",
]
