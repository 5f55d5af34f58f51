"""The examples run as their docstrings say: the NumPy script under
`oxccl run`, DDP under torchrun."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def oxccl_bin():
    path = os.environ.get("OXCCL_BIN") or ROOT / "target/debug/oxccl"
    if not Path(path).exists():
        pytest.skip(f"no oxccl launcher at {path} (cargo build -p oxccl-tools)")
    return str(path)


def test_numpy_example_under_oxccl_run():
    out = subprocess.run(
        [oxccl_bin(), "run", "-n", "2", "--", sys.executable, str(ROOT / "python/examples/numpy_allreduce.py")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rank 0 of 2" in out.stdout and "rank 1 of 2" in out.stdout, out.stdout


def test_ddp_example_under_torchrun():
    pytest.importorskip("torch")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(ROOT / "python/examples/ddp_torchrun.py")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OXCCL_TIMEOUT": "60"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "over oxccl" in out.stdout, out.stdout
