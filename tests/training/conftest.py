"""Fixtures for the training, serving and rules tests: tiny real data and real training runs.

Everything here is real: the digits come from scikit-learn's bundled data set, train.py runs as
a subprocess exactly as SageMaker starts it (environment variables and `--name value` only), and
the rule trials are written by smdebug's own PyTorch hook over small networks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `training` is a source folder, not an installed package
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")

import torch  # noqa: E402
from smdebug.core.modes import ModeKeys  # noqa: E402
from smdebug.core.save_config import SaveConfig  # noqa: E402
from smdebug.pytorch import Hook  # noqa: E402
from torch import nn  # noqa: E402

from tests.support.datasets import write_tiny_digits  # noqa: E402
from tests.support.runs import TINY_TRAIN_ARGS  # noqa: E402

TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"
# Small and fast (tests.support.runs), over two epochs so there is a trend to judge.
FAST_ARGS = {**TINY_TRAIN_ARGS, "epochs": "2"}


@dataclass
class TrainRun:
    """One finished (or failed) train.py process and the folders SageMaker would have given it."""

    returncode: int
    stdout: str
    stderr: str
    model_dir: Path
    output_dir: Path
    debug_dir: Path
    checkpoint_dir: Path


def run_train(
    tmp: Path,
    data_dir: Path,
    *,
    args: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    debug: bool = True,
    checkpoints: bool = False,
    timeout: int = 300,
    processes: int = 1,
) -> TrainRun:
    """Start train.py the way SageMaker does: SM_* variables plus `--name value` arguments.

    With `processes` > 1, under torchrun on this machine (one node, a free port on 127.0.0.1,
    Gloo over the loopback), as the toolkit starts it for torch_distributed."""
    tmp.mkdir(parents=True, exist_ok=True)
    run = TrainRun(0, "", "", tmp / "model", tmp / "output", tmp / "tensors", tmp / "checkpoints")
    argv = {**FAST_ARGS, **(args or {})}
    if debug:
        argv.setdefault("debug-out-dir", str(run.debug_dir))
        argv.setdefault("debug-save-interval", "1000")  # heavy tensors at step 0 only
    if checkpoints:
        argv.setdefault("checkpoint-dir", str(run.checkpoint_dir))
    command = [sys.executable, str(TRAIN_SCRIPT)]
    if processes > 1:
        command[1:1] = [
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
        ]
    for name, value in argv.items():
        command += [f"--{name}", value]
    inherited = {k: v for k, v in os.environ.items() if k != "SMDEBUG_CONFIG_FILE_PATH"}
    environment = {
        **inherited,
        "SM_CHANNEL_TRAIN": str(data_dir / "train"),
        "SM_CHANNEL_VALID": str(data_dir / "valid"),
        "SM_CHANNEL_TEST": str(data_dir / "test"),
        "SM_MODEL_DIR": str(run.model_dir),
        "SM_OUTPUT_DATA_DIR": str(run.output_dir),
        **({"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"} if processes > 1 else {}),
        **(env or {}),
    }
    done = subprocess.run(
        command,
        env=environment,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    run.returncode, run.stdout, run.stderr = done.returncode, done.stdout, done.stderr
    return run


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 digits per class: 6 train, 2 valid, 2 test, as 16x16 RGB PNGs."""
    return write_tiny_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, digits_dir: Path) -> TrainRun:
    """One 2-epoch run with the debug hook and the rules, shared by the artifact tests."""
    run = run_train(tmp_path_factory.mktemp("trained"), digits_dir)
    assert run.returncode == 0, run.stderr
    return run


@pytest.fixture()
def copy_of_digits(tmp_path: Path, digits_dir: Path) -> Path:
    """A private copy of the tiny data set that a test may damage."""
    target = tmp_path / "data"
    subprocess.run(["cp", "-r", str(digits_dir), str(target)], check=True)
    return target


# ---------------------------------------------------------------------------------------------
# Trials for the rules: smdebug's own hook over a small network on the 8x8 digits
# ---------------------------------------------------------------------------------------------


def small_network(hidden: int = 32) -> nn.Module:
    """Two hidden ReLU layers; modules named `blockN.relu` so `.*relu_input` finds them."""

    def block(inputs: int) -> nn.Sequential:
        return nn.Sequential(OrderedDict(fc=nn.Linear(inputs, hidden), relu=nn.ReLU()))

    return nn.Sequential(
        OrderedDict(block1=block(64), block2=block(hidden), head=nn.Linear(hidden, 10))
    )


def record_trial(
    out_dir: Path,
    *,
    lr: float = 0.01,
    epochs: int = 12,
    train_samples: int = 1200,
    batch_size: int = 64,
    init: Callable[[nn.Module], None] | None = None,
    collections: tuple[str, ...] = ("losses", "weights", "biases", "gradients", "relu_input"),
    seed: int = 0,
) -> Path:
    """Train the small network with an smdebug hook saving every collection at every step.

    The validation pass is one batch of the last 397 digits, so each EVAL step is one epoch.
    """
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=generator)
    train_idx, valid_idx = order[:train_samples], order[1400:]
    model = small_network()
    if init is not None:
        init(model)
    hook = Hook(
        out_dir=str(out_dir),
        save_config=SaveConfig(save_interval=1),
        include_collections=list(collections),
    )
    if "relu_input" in collections:
        hook.get_collection("relu_input").include(".*relu_input")
    criterion = nn.CrossEntropyLoss()
    hook.register_module(model)
    hook.register_loss(criterion)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        hook.set_mode(ModeKeys.TRAIN)
        model.train()
        shuffled = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for start in range(0, len(shuffled), batch_size):
            batch = shuffled[start : start + batch_size]
            optimizer.zero_grad()
            criterion(model(x[batch]), y[batch]).backward()
            optimizer.step()
        hook.set_mode(ModeKeys.EVAL)
        model.eval()
        with torch.no_grad():
            criterion(model(x[valid_idx]), y[valid_idx])
    hook.close()
    return out_dir


@pytest.fixture()
def train_runner() -> Callable[..., TrainRun]:
    """run_train(tmp, data_dir, args=..., env=..., debug=..., checkpoints=...)."""
    return run_train


@pytest.fixture(scope="session")
def trial_recorder() -> Callable[..., Path]:
    """record_trial(out_dir, lr=..., epochs=..., train_samples=..., init=...)."""
    return record_trial
