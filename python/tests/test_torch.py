"""The torch.distributed backend "oxccl" against Gloo in the same job."""

import socket

import pytest

torch = pytest.importorskip("torch")
import torch.multiprocessing as mp  # noqa: E402

import torch_workers  # noqa: E402


def spawn(fn, world, *args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(fn, args=(world, port, *args), nprocs=world, join=True, start_method="spawn")


@pytest.mark.parametrize("world", [2, 3])
def test_every_operation_against_gloo(world):
    spawn(torch_workers.every_operation, world)


def test_ddp_on_oxccl_matches_ddp_on_gloo():
    spawn(torch_workers.ddp_matches_gloo, 2)


def test_bad_input_raises_and_never_hangs():
    spawn(torch_workers.bad_input, 2)
