"""The Python package against NumPy references, 2-4 processes a test."""

import pytest

import workers


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_collective_dtype_and_op(ranks, world):
    ranks(world, workers.every_collective)


@pytest.mark.parametrize("world", [2, 3])
def test_every_collective_on_device_memory(ranks, world):
    """The same checks with every buffer in the emulated device's memory:
    the GPU collectives, stream-ordered between the processes."""
    ranks(world, workers.every_collective, True)


@pytest.mark.parametrize("world", [2, 3])
def test_shared_memory_buffers(ranks, world):
    ranks(world, workers.shared_memory)


def test_device_sends_and_mixed_memory(ranks):
    ranks(3, workers.device_sends_and_mixed_memory)


@pytest.mark.parametrize("world", [2, 3])
def test_sends_receives_and_dlpack(ranks, world):
    ranks(world, workers.sends_receives_and_dlpack)


def test_the_gil_is_released_while_a_collective_waits(ranks):
    ranks(2, workers.gil_is_released)


def test_bad_input_raises_and_never_hangs(ranks):
    ranks(2, workers.bad_input)


def test_a_local_group_in_threads():
    import threading

    import numpy as np

    import oxccl

    comms = oxccl.Communicator.local_group(3, timeout=30)
    errors = []

    def run(comm):
        try:
            buf = np.full(100, comm.rank, np.float64)
            comm.all_reduce(buf)
            assert (buf == 3.0).all()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in comms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert "rank 0 of 3" in repr(comms[0])
