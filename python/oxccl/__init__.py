"""oxccl: collective communication (all-reduce and friends) for Python.

A :class:`Communicator` is one rank of a group::

    import numpy as np, oxccl
    comm = oxccl.Communicator.from_env()        # under oxccl run, mpirun, srun, torchrun
    # or oxccl.Communicator(rank, world, "host:port")
    x = np.arange(1000, dtype=np.float32)
    comm.all_reduce(x)                          # in place: x is now the sum over ranks

Collectives take anything exposing the buffer protocol (NumPy arrays,
bytearray, memoryview) or DLPack (torch tensors), contiguous, without
copying; the GIL is released while they run. CUDA tensors go through
oxccl's GPU collectives, ordered on the ``stream`` argument (an int
``cudaStream_t``, e.g. ``torch.cuda.current_stream().cuda_stream``; 0: the
default stream); the first call on device memory binds the communicator to
that device (every rank makes it). :func:`device_buffer` gives memory of
the emulated device (``OXCCL_DEVICE=emu``) to test that path without a GPU.
:meth:`Communicator.alloc_shared` gives memory of the communicator's shared
memory, which peers on the host read directly (zero copy). Failures raise
:class:`oxccl.Error` subclasses whose message names the call, its sequence
number and the peer. ``import oxccl.torch`` registers the ``"oxccl"``
backend of ``torch.distributed``.
"""

from ._oxccl import (
    Communicator,
    DeviceBuffer,
    Error,
    InternalError,
    InvalidArgument,
    InvalidUsage,
    RemoteError,
    SharedBuffer,
    SystemError,
    Timeout,
    __version__,
    device_buffer,
)

__all__ = [
    "Communicator",
    "DeviceBuffer",
    "Error",
    "InternalError",
    "InvalidArgument",
    "InvalidUsage",
    "RemoteError",
    "SharedBuffer",
    "SystemError",
    "Timeout",
    "__version__",
    "device_buffer",
]
