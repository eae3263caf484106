"""Train a torchvision ResNet image classifier under the SageMaker training contract.

One entry point for tuning trials and for the profiled retrain. SageMaker runs it as
`python train.py --name value ...` with the data channels and output folders in SM_* variables:

    SM_CHANNEL_TRAIN, SM_CHANNEL_VALID, SM_CHANNEL_TEST   <split>/<NNN.Label>/<image>
    SM_MODEL_DIR        model.pth (state_dict), model_info.json, classes.json, code/inference.py,
                        baseline.json (monitoring: the validation split as the model sees it)
    SM_OUTPUT_DIR       tensors/ (smdebug, when no hook config came from SageMaker)
    SM_OUTPUT_DATA_DIR  history.json, confusion.json (the test pass: confusion matrix and
                        accuracy per class), baseline.json, skipped_files.json,
                        rule_statuses.json (when rules ran),
                        debug_hook_config.json (the hook settings, when train.py chose them),
                        profiler/system-metrics.json (CPU/GPU/memory, the Profiler's format)

Phases: load and check the data; build the model (new head sized to the classes); restore the
checkpoint if one exists (managed spot training restarts the job from /opt/ml/checkpoints);
train, printing one metric line per epoch for train and valid (tuning sees only these); save the
model; evaluate the test split once; run the debugging rules on the tensors the smdebug hook
saved. Nothing here needs SageMaker Debugger: without the debughookconfig.json it writes, the
hook is built from debug_hook.json (shipped beside this file) and the system profile is sampled
by the job itself. See docs/contracts.md for every name used here.

Several instances (SageMaker's torch_distributed: the toolkit starts this script with torchrun
on every host, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT): each
process joins one process group (NCCL on GPUs, Gloo on CPUs), trains a DistributedDataParallel
copy of the model on its own share of the training split (DistributedSampler), with the
learning rate scaled to the global batch (`scaled_lr`), and evaluates its share of valid and
test; the sums are reduced across processes, so the metric lines are the whole split's, and
rank 0 alone prints them and writes the model, checkpoints, smdebug tensors and every output
file. Without WORLD_SIZE (or with 1) nothing of this happens: the job runs as one process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

# smdebug logs at INFO on import and on every hook action; that drowns the metric lines.
# Set before smdebug is first imported (its logger reads this once); override from outside.
os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")
# smdebug 1.0.34's generated *_pb2 modules predate protoc 3.19: protobuf >= 4 refuses them
# with its upb/C++ backends but reads and writes them with its pure-Python one. The training
# image pins protobuf 6.x (sagemaker-training needs >= 5.28), so choose that backend before
# anything imports protobuf (measured: docs/training-image.md).
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import numpy as np
import torch
import torch.distributed as dist
from pipeline_common import metrics  # the metric lines' one home, vendored in the archive
from smdebug.core.modes import ModeKeys
from smdebug.core.save_config import SaveConfig, SaveConfigMode
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Subset

if TYPE_CHECKING:
    # smdebug.pytorch is imported where a hook is built (`build_debug_hook`), not here: it
    # pulls in pandas and more of torch.distributed, and rules.py (`load_rules`) smdebug's
    # trial reader: together about 20% of a job's start-up (docs/performance.md). Tuning
    # trials run without a hook and without rules, so they never import either.
    import smdebug.pytorch as smd

try:  # imported as part of the `training` package (tests, tooling)
    from . import baseline, data, explain, inference, profiler
except ImportError:  # run as a script from inside training/ (SageMaker's entry point)
    import baseline
    import data
    import explain
    import inference
    import profiler


def load_rules() -> ModuleType:
    """training/rules.py, imported on first use (by a job that has a hook or runs rules)."""
    try:
        from . import rules
    except ImportError:  # run as a script from inside training/
        import rules
    return rules


SAGEMAKER_CHECKPOINT_DIR = Path("/opt/ml/checkpoints")
SAGEMAKER_HOOK_CONFIG = Path("/opt/ml/input/config/debughookconfig.json")
HOOK_CONFIG_ENV = "SMDEBUG_CONFIG_FILE_PATH"
# The hook settings used when SageMaker passes none (an account without Debugger): the same
# format as SageMaker's debughookconfig.json, LocalPath filled in at run time.
OWN_HOOK_CONFIG = Path(__file__).with_name("debug_hook.json")
OWN_TENSOR_FOLDER = "tensors"
CHECKPOINT_FILE = "checkpoint.pth"
CHECKPOINT_CONFIG = "checkpointconfig.json"
OPTIMIZERS = ("sgd", "adamw")
DEBUG_COLLECTIONS = ("losses", "weights", "biases", "gradients", "relu_input")
# Test-only fault injection (--inject-fault, hidden from --help): broken trainings that the
# rule benchmark (bench/rules.py) and tests/training/test_rule_gate.py must see blocked.
# "none" is the default, and production requests never set it.
FAULTS = ("none", "shuffled-labels", "zero-init", "constant-init", "frozen", "nan-loss")


class SetupError(Exception):
    """The job cannot start as asked (weights unavailable, mismatched checkpoint, bad config)."""


@dataclass(frozen=True)
class World:
    """This process's place among the job's training processes (torchrun's variables)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints metric lines and writes outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


@dataclass
class EpochStats:
    """Loss averaged over samples (sum of batch loss x batch size / n) and accuracy."""

    loss: float
    accuracy: float
    samples: int


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def str2bool(text: str) -> bool:
    """SageMaker passes every hyperparameter as a string: accept true/false (any case), 1/0."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def default_workers() -> int:
    """Leave a core for the training loop; decoding small images rarely needs more than four.
    Counted from the CPU affinity (a container's cpuset), not os.cpu_count()."""
    return max(0, min(4, len(os.sched_getaffinity(0)) - 1))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a ResNet classifier on <split>/<NNN.Label>/<image> folders "
        "(SageMaker training contract: data and outputs in SM_* variables).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    flag = "{true,false}"
    add("--model", default="resnet18", choices=inference.SUPPORTED_MODELS, help="architecture")
    add("--batch-size", default=64, type=positive_int, help="images per training batch")
    add("--lr", default=0.05, type=positive_float, help="initial learning rate (cosine decay)")
    add("--epochs", default=10, type=positive_int, help="total epochs (also when resuming)")
    add("--optimizer", default="sgd", choices=OPTIMIZERS, help="sgd (momentum 0.9) or adamw")
    add("--weight-decay", default=1e-4, type=float, help="L2 weight decay")
    add("--pretrained", default=False, type=str2bool, metavar=flag, help="ImageNet weights")
    add("--freeze-backbone", default=False, type=str2bool, metavar=flag, help="train the head only")
    add("--image-size", default=224, type=positive_int, help="side of the square model input")
    add("--hflip", default=False, type=str2bool, metavar=flag, help="random horizontal flips")
    add("--seed", default=0, type=int, help="seed for weights, shuffling and augmentation")
    # Test-only: break the training on purpose (see FAULTS); not a SageMaker hyperparameter.
    add("--inject-fault", default="none", choices=FAULTS, help=argparse.SUPPRESS)
    add("--workers", default=default_workers(), type=int, help="data loading processes")
    add(
        "--checkpoint-dir",
        default=None,
        type=str,
        help=f"where to checkpoint each epoch and resume from ({SAGEMAKER_CHECKPOINT_DIR} "
        "wins when it exists; neither: no checkpoints)",
    )
    add(
        "--debug-out-dir",
        default=None,
        type=str,
        help=f"save smdebug tensors here when no hook config ({HOOK_CONFIG_ENV} or "
        f"{SAGEMAKER_HOOK_CONFIG}) is given",
    )
    add(
        "--debug-save-interval",
        default=500,
        type=positive_int,
        help="training steps between saved weights/gradients/ReLU inputs (losses: every step)",
    )
    add(
        "--profile-interval",
        default=profiler.DEFAULT_INTERVAL_S,
        type=float,
        help="seconds between CPU/GPU/memory samples written to "
        f"SM_OUTPUT_DATA_DIR/{profiler.FOLDER}/{profiler.METRICS_FILE} (0: no profile)",
    )
    add(
        "--run-rules",
        default=None,
        type=str2bool,
        metavar=flag,
        help="evaluate the debugging rules at the end (default: true when a hook is active)",
    )
    return parser


def check_args(args: argparse.Namespace) -> None:
    if args.image_size < 8:
        raise SetupError(f"--image-size must be at least 8 pixels, got {args.image_size}")
    if args.workers < 0:
        raise SetupError(f"--workers must be 0 or more, got {args.workers}")
    if args.weight_decay < 0:
        raise SetupError(f"--weight-decay must be 0 or more, got {args.weight_decay}")


# ---------------------------------------------------------------------------------------------
# Environment (SageMaker training contract)
# ---------------------------------------------------------------------------------------------


def channel_dir(name: str) -> Path:
    return Path(os.environ.get(f"SM_CHANNEL_{name.upper()}", f"/opt/ml/input/data/{name}"))


def model_dir() -> Path:
    return Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))


def output_dir() -> Path:
    return Path(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"))


def output_data_dir() -> Path:
    return Path(os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))


def checkpoint_dir(args: argparse.Namespace) -> Path | None:
    """/opt/ml/checkpoints, else the LocalPath of the job's CheckpointConfig (SageMaker writes
    checkpointconfig.json into the input config dir), else --checkpoint-dir, else none."""
    if SAGEMAKER_CHECKPOINT_DIR.is_dir():
        return SAGEMAKER_CHECKPOINT_DIR
    config = Path(os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config"))
    config_file = Path(os.environ.get("CHECKPOINT_CONFIG_FILE_PATH", config / CHECKPOINT_CONFIG))
    if not args.checkpoint_dir and config_file.is_file():
        return Path(json.loads(config_file.read_text())["LocalPath"])
    return Path(args.checkpoint_dir) if args.checkpoint_dir else None


def say(line: str) -> None:
    """One line on stdout in one write: the processes of a host share its output (torchrun
    runs them unbuffered), and print's separate write of the newline would let another
    process's line land in the middle of a metric line."""
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def pin_threads() -> int:
    """One intra-op thread per core this process may run on (OMP_NUM_THREADS wins when set).

    torch sizes its pool from the machine's cores, which in a container or under a CPU
    affinity mask can be more than the job may use; more threads than cores make every
    parallel region wait for a thread that is not scheduled (measured on the shared 2-core
    machine at load 14: a resnet18 step at 32 px ran at 5 images/s with 2 threads, 27 with 1).
    """
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    return torch.get_num_threads()


def join_world() -> World:
    """Join the job's process group when torchrun started several processes (WORLD_SIZE > 1).

    NCCL between GPUs, Gloo between CPUs; the rendezvous is torchrun's (MASTER_ADDR and
    MASTER_PORT: the first host, algo-1, port 7777 under the SageMaker training toolkit).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":  # one GPU per process, chosen before NCCL starts
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    world = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    host = os.environ.get("SM_CURRENT_HOST", "?")
    say(f"[worker] rank={world.rank} world_size={world.size} host={host} backend={backend}")
    return world


def leave_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def scaled_lr(lr: float, optimizer: str, world_size: int) -> float:
    """The learning rate for `world_size` processes that each take --batch-size images a step.

    The global batch grows with the processes, so the rate grows with it: linearly for SGD
    (Goyal et al. 2017, "Accurate, Large Minibatch SGD": k times the batch, k times the rate),
    with the square root for AdamW (Adam's update is normalised by its second moment; the
    square-root rule of Hoffer et al. 2017 / Malladi et al. 2022). --lr therefore keeps its
    meaning per process, and a rate tuned on one instance transfers to several.
    """
    if world_size <= 1:
        return lr
    return lr * (math.sqrt(world_size) if optimizer == "adamw" else world_size)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------------------------


def load_data(args: argparse.Namespace) -> tuple[list[str], dict[str, data.Split]]:
    """Scan the three channels; the class list comes from the train split."""
    classes = data.find_classes(channel_dir("train"))
    splits = {name: data.scan_split(name, channel_dir(name), classes) for name in metrics.SPLITS}
    return classes, splits


def build_loaders(
    args: argparse.Namespace, splits: dict[str, data.Split], world: World = SINGLE
) -> dict[str, torch.utils.data.DataLoader]:
    """One loader per split; with several processes each loads only its own share."""
    resize = inference.resize_size_for(args.image_size)
    train_tf = data.build_train_transform(args.image_size, resize, args.hflip)
    eval_tf = inference.build_eval_transform(args.image_size, resize)
    loaders = {}
    for name, split in splits.items():
        training = name == "train"
        dataset = data.ImageFolderDataset(split.samples, train_tf if training else eval_tf)
        if not world.distributed:
            loaders[name] = data.make_loader(
                dataset, args.batch_size, shuffle=training, workers=args.workers, seed=args.seed
            )
        elif training:
            loaders[name] = data.make_distributed_loader(
                dataset,
                DistributedSampler(
                    dataset, num_replicas=world.size, rank=world.rank, shuffle=True, seed=args.seed
                ),
                args.batch_size,
                workers=args.workers,
                seed=args.seed,
            )
        else:
            # Every image exactly once across the processes (a DistributedSampler would pad the
            # split with repeats): the reduced loss and accuracy are the whole split's.
            share = Subset(dataset, range(world.rank, len(dataset), world.size))
            loaders[name] = data.make_loader(
                share, args.batch_size, shuffle=False, workers=args.workers, seed=args.seed
            )
    return loaders


def whole_split(
    loader: torch.utils.data.DataLoader, args: argparse.Namespace
) -> torch.utils.data.DataLoader:
    """A loader over the whole split of an evaluation loader (one process's is a Subset)."""
    if not isinstance(loader.dataset, Subset):
        return loader
    return data.make_loader(
        loader.dataset.dataset, args.batch_size, shuffle=False, workers=args.workers, seed=args.seed
    )


def build_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    """ResNet with a new head; ImageNet weights on request, with a clear error offline."""
    try:
        weights = "DEFAULT" if args.pretrained else None
        model = inference.build_model(args.model, num_classes, weights=weights)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad cached file Runtime
        if not args.pretrained:
            raise
        raise SetupError(
            f"--pretrained true needs torchvision's ImageNet weights for {args.model}, which "
            f"could not be loaded ({type(e).__name__}: {e}). Fix: give the job internet access, "
            f"or put the weights file in {torch.hub.get_dir()}/checkpoints, "
            "or train from scratch with --pretrained false"
        ) from e
    if args.freeze_backbone:
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith("fc.")
    return model


def cosine_schedule(epochs: int) -> Callable[[int], float]:
    """Learning-rate factor for epoch index e (0-based): cosine decay from 1 towards 0.

    A closed form of (e, epochs) rather than a recursive update, so a resumed job whose
    --epochs was raised continues on the new curve.
    """

    def factor(epoch_index: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch_index, epochs) / epochs))

    return factor


def build_optimizer(
    args: argparse.Namespace, model: nn.Module, world_size: int = 1
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    parameters = [p for p in model.parameters() if p.requires_grad]
    lr = scaled_lr(args.lr, args.optimizer, world_size)
    if args.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            parameters, lr=lr, momentum=0.9, weight_decay=args.weight_decay
        )
    elif args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=args.weight_decay)
    else:
        raise SetupError(f"unknown optimizer {args.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(args.epochs))
    return optimizer, scheduler


def apply_schedule(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR
) -> None:
    """Set each group's learning rate for the scheduler's current epoch (used after resuming)."""
    for group, base, factor in zip(
        optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(scheduler.last_epoch)


# ---------------------------------------------------------------------------------------------
# smdebug hook
# ---------------------------------------------------------------------------------------------


def hook_config_path() -> Path | None:
    """The JSON hook config SageMaker writes, or the one SMDEBUG_CONFIG_FILE_PATH names."""
    named = os.environ.get(HOOK_CONFIG_ENV)
    if named:
        if not Path(named).is_file():
            raise SetupError(f"{HOOK_CONFIG_ENV}={named} does not exist")
        return Path(named)
    return SAGEMAKER_HOOK_CONFIG if SAGEMAKER_HOOK_CONFIG.is_file() else None


def own_hook_config(tensor_dir: Path, out_dir: Path) -> Path:
    """debug_hook.json with LocalPath set, written to out_dir for smdebug to read (and for
    anyone to see which settings the job used).

    Used when SageMaker passes no hook config (Debugger closed to the account). The tensors go
    to SM_OUTPUT_DIR/tensors, where Debugger would have put them, and not into output.tar.gz:
    two epochs of a ResNet-18 already save 174 MB (135 MB gzipped), which the evaluate and
    report Lambdas would have to download to read the small rule_statuses.json beside them.
    """
    config = json.loads(OWN_HOOK_CONFIG.read_text())
    config["LocalPath"] = str(tensor_dir)
    path = out_dir / "debug_hook_config.json"
    write_json(path, config)
    return path


def build_debug_hook(args: argparse.Namespace, resuming: bool) -> smd.Hook | None:
    """A hook from SageMaker's JSON config when present; else from --debug-out-dir; else, when
    the rules are to run, from the settings this script ships (debug_hook.json); else none."""
    config = hook_config_path()
    if config is None and args.debug_out_dir is None and not args.run_rules:
        return None  # no hook: smdebug.pytorch is never imported (start-up, see the top)
    import smdebug.pytorch as smd

    source = "SageMaker's hook config"
    if config is None and args.debug_out_dir is None and args.run_rules:
        config = own_hook_config(output_dir() / OWN_TENSOR_FOLDER, output_data_dir())
        source = f"{OWN_HOOK_CONFIG.name} (no hook config from SageMaker)"
    if config is not None:
        out_dir = json.loads(config.read_text()).get("LocalPath", "/opt/ml/output/tensors")
        reopen_trial(Path(out_dir), resuming)
        say(f"[setup] debug hook from {source}: tensors in {out_dir}")
        return smd.Hook.create_from_json_file(str(config))
    if args.debug_out_dir is None:
        return None
    reopen_trial(Path(args.debug_out_dir), resuming)
    hook = smd.Hook(
        out_dir=args.debug_out_dir,
        save_config=SaveConfig(save_interval=args.debug_save_interval),
        include_collections=list(DEBUG_COLLECTIONS),
    )
    configure_collections(hook, args.debug_save_interval)
    return hook


def configure_collections(hook: smd.Hook, interval: int) -> None:
    """Losses every step in every mode (the rules compare them); the heavy tensors only every
    `interval` training steps, step 0 included, and never while evaluating."""
    hook.get_collection("relu_input").include(".*relu_input")
    never = SaveConfigMode(start_step=0, end_step=0)
    train_only = {
        ModeKeys.TRAIN: SaveConfigMode(save_interval=interval),
        ModeKeys.EVAL: never,
        ModeKeys.PREDICT: never,
        ModeKeys.GLOBAL: never,
    }
    for name in ("weights", "biases", "gradients", "relu_input"):
        hook.get_collection(name).save_config = train_only
    hook.get_collection("losses").save_config = SaveConfig(save_interval=1)


def reopen_trial(out_dir: Path, resuming: bool) -> None:
    """A resumed job appends to its own trial; a new job must not mix into a finished one.

    smdebug itself refuses a folder marked finished, but only by logging an error and quietly
    switching the hook off, so the job would run without the tensors it was asked to save.
    """
    marker = out_dir / load_rules().END_OF_JOB_FILE
    if not marker.exists():
        return
    if not resuming:
        raise SetupError(
            f"{out_dir} already holds the smdebug tensors of a finished job: "
            "give the debug output a new folder, or remove this one"
        )
    marker.unlink()


def close_hook(hook: smd.Hook) -> None:
    """Flush the tensors and mark the trial finished, so the in-job rules can read it.

    Outside SageMaker, smdebug writes the end-of-job marker when the hook closes; inside a
    SageMaker job (TRAINING_JOB_NAME is set) it leaves that to the platform, which writes it
    only after this process exits, too late for rules that run at the end of the script.
    """
    hook.close()
    marker = Path(hook.out_dir) / load_rules().END_OF_JOB_FILE
    if not marker.exists():
        marker.touch()


def attach_hook(hook: smd.Hook, model: nn.Module, criterion: nn.Module) -> None:
    """Record ReLU inputs truthfully, then register the model and the loss.

    smdebug records module inputs in a forward hook, after forward ran: an in-place ReLU has
    already overwritten its input by then, so "relu_input" would hold ReLU outputs.
    """
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    hook.register_module(model)
    hook.register_loss(criterion)


def hook_steps(hook: smd.Hook | None) -> dict[str, Any] | None:
    """The hook's step counters, checkpointed so a resumed job continues the same numbering."""
    if hook is None:
        return None
    return {"step": hook.step, "modes": {m.name: s for m, s in hook.mode_steps.items()}}


def restore_hook_steps(hook: smd.Hook | None, saved: dict[str, Any] | None) -> None:
    if hook is None or not saved or hook.training_run > 0:  # smdebug restored itself
        return
    hook.init_step = hook.step = saved["step"]
    hook.mode_steps = {ModeKeys[name]: step for name, step in saved["modes"].items()}


def set_mode(hook: smd.Hook | None, mode: ModeKeys) -> None:
    if hook is not None:
        hook.set_mode(mode)


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------


def reduced_stats(
    world: World, total_loss: float, correct: int, seen: int, device: torch.device
) -> EpochStats:
    """Loss and accuracy over every process's share: the sums are added up, then divided."""
    sums = torch.tensor([total_loss, correct, seen], dtype=torch.float64)
    if world.distributed:
        sums = to_reduce(sums, device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    total_loss, correct, seen = sums[0].item(), int(sums[1].item()), int(sums[2].item())
    return EpochStats(total_loss / seen, correct / seen, seen)


def to_reduce(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor where the process group's backend can reduce it (NCCL: the GPU)."""
    return tensor.to(device) if dist.get_backend() == "nccl" else tensor


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    world: World = SINGLE,
) -> EpochStats:
    model.train()
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        outputs = model(images)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * targets.size(0)
        correct += int((outputs.argmax(dim=1) == targets).sum())
        seen += targets.size(0)
        steps += 1
    if not world.distributed:
        return EpochStats(total_loss / seen, correct / seen, seen)
    # Each process's own count, printed by each (the job's log shows every host's share).
    say(f"[worker] rank={world.rank} split=train steps={steps} samples={seen}")
    return reduced_stats(world, total_loss, correct, seen, device)


def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    confusion: torch.Tensor | None = None,
    world: World = SINGLE,
) -> EpochStats:
    """Loss and accuracy over `loader`; with `confusion` (classes x classes, on the CPU), also
    count each (true, predicted) pair into it, so the test pass records its confusion matrix
    without a second pass over the images."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            outputs = model(images)
            predicted = outputs.argmax(dim=1)
            total_loss += criterion(outputs, targets).item() * targets.size(0)
            correct += int((predicted == targets).sum())
            seen += targets.size(0)
            if confusion is not None:
                pairs = (targets.cpu(), predicted.cpu())
                confusion.index_put_(pairs, torch.ones_like(pairs[0]), accumulate=True)
    if not world.distributed:
        return EpochStats(total_loss / seen, correct / seen, seen)
    if confusion is not None:
        counts = to_reduce(confusion, device)
        dist.all_reduce(counts)
        confusion.copy_(counts.cpu())
    return reduced_stats(world, total_loss, correct, seen, device)


def print_metrics(epoch: int | str, split: str, stats: EpochStats) -> None:
    say(metrics.format_metric_line(epoch, split, stats.loss, stats.accuracy))


# ---------------------------------------------------------------------------------------------
# Checkpoints and outputs
# ---------------------------------------------------------------------------------------------


def load_checkpoint(directory: Path | None, args: argparse.Namespace, classes: list[str]) -> dict:
    """The saved state when one exists and belongs to this job; {} when starting fresh."""
    if directory is None or not (directory / CHECKPOINT_FILE).is_file():
        return {}
    state = torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    if state["args"]["model"] != args.model or state["classes"] != classes:
        raise SetupError(
            f"the checkpoint in {directory} is for model {state['args']['model']} with "
            f"{len(state['classes'])} classes, not {args.model} with {len(classes)}: "
            "use a fresh --checkpoint-dir"
        )
    return state


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """Write-then-rename, so an interruption never leaves a half-written checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / (CHECKPOINT_FILE + ".partial")
    torch.save(state, partial)
    os.replace(partial, directory / CHECKPOINT_FILE)


def save_model(
    directory: Path, model: nn.Module, args: argparse.Namespace, classes: list[str]
) -> None:
    """state_dict + what inference.model_fn needs to rebuild, preprocess and label."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, directory / "model.pth")
    info = {
        "model": args.model,
        # SageMaker names the job in the container's environment; answers carry it, so a
        # client can tell which model served a request (e.g. across an endpoint update).
        "training_job": os.environ.get("TRAINING_JOB_NAME", ""),
        "num_classes": len(classes),
        "image_size": args.image_size,
        "resize_size": inference.resize_size_for(args.image_size),
        "mean": list(inference.IMAGENET_MEAN),
        "std": list(inference.IMAGENET_STD),
    }
    write_json(directory / "model_info.json", info)
    write_json(directory / "classes.json", classes)
    (directory / "code").mkdir(exist_ok=True)
    shutil.copy2(Path(inference.__file__), directory / "code" / "inference.py")
    explain.copy_serving_code(directory / "code")  # Grad-CAM for ?explain=true


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def report_skipped(splits: dict[str, data.Split]) -> list[dict[str, str]]:
    skipped = [entry for split in splits.values() for entry in split.skipped]
    for entry in skipped:
        say(f"[data] skipped {entry['split']}/{entry['file']}: {entry['reason']}")
    return skipped


def run_rules(trial_dir: str | None, out_dir: Path) -> None:
    """Evaluate the rules on the finished trial; write rule_statuses.json and one summary line."""
    rules = load_rules()
    if trial_dir is None:
        reason = (
            "no debug hook was active (no hook config, no --debug-out-dir, --run-rules not set "
            "at start): no tensors saved"
        )
        results = [rules.status(name, rules.ERROR, reason) for name in rules.RULE_NAMES]
    else:
        results = rules.evaluate_rules(trial_dir)
    write_json(out_dir / "rule_statuses.json", results)
    words = " ".join(f"{r['RuleConfigurationName']}={r['RuleEvaluationStatus']}" for r in results)
    say(f"[rules] {words} (rule_statuses.json)")
    for r in results:
        if r["RuleEvaluationStatus"] != rules.NO_ISSUES:
            say(f"[rules] {r['RuleConfigurationName']}: {r['StatusDetails']}")


# ---------------------------------------------------------------------------------------------
# Test-only fault injection (--inject-fault)
# ---------------------------------------------------------------------------------------------


def shuffle_labels(split: data.Split, seed: int) -> None:
    """shuffled-labels: the training targets are permuted, so images and labels are unrelated
    (valid and test keep their true labels: the model learns nothing that generalises)."""
    targets = [target for _, target in split.samples]
    random.Random(seed).shuffle(targets)
    split.samples = [(path, t) for (path, _), t in zip(split.samples, targets, strict=True)]


def constant_init(model: nn.Module, value: float) -> None:
    """zero-init / constant-init: every parameter set to one value (symmetry never breaks)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(value)


def freeze(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """frozen: a learning rate of 0 in every group, so no parameter ever changes."""
    scheduler.base_lrs = [0.0] * len(scheduler.base_lrs)
    for group in optimizer.param_groups:
        group["lr"] = 0.0


def poison(model: nn.Module) -> None:
    """nan-loss: one weight becomes NaN (as an overflow would make it); every later loss is NaN."""
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] = float("nan")


def inject_setup_faults(
    args: argparse.Namespace,
    splits: dict[str, data.Split],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> None:
    """Apply the --inject-fault that acts before training; announce it in the log."""
    if args.inject_fault == "none":
        return
    say(f"[setup] test-only fault injected: {args.inject_fault}")
    if args.inject_fault == "shuffled-labels":
        shuffle_labels(splits["train"], args.seed)
    elif args.inject_fault in ("zero-init", "constant-init"):
        constant_init(model, 0.0 if args.inject_fault == "zero-init" else 0.01)
    elif args.inject_fault == "frozen":
        freeze(optimizer, scheduler)


def nan_epoch(args: argparse.Namespace) -> int | None:
    """The epoch at whose start nan-loss poisons the model: half-way, once it has learned."""
    return args.epochs // 2 + 1 if args.inject_fault == "nan-loss" else None


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    check_args(args)
    pin_threads()
    seed_everything(args.seed)
    world = join_world()
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
        device = torch.device("cuda", world.local_rank)
    else:
        device = torch.device("cpu")
    out_dir = output_data_dir()

    sampler = (
        profiler.SystemProfiler(out_dir, args.profile_interval).start()
        if args.profile_interval > 0 and world.main
        else None
    )
    try:
        train_and_evaluate(args, device, out_dir, world)
    finally:
        if sampler is not None:
            sampler.stop()
        leave_world(world)


def shared_checkpoint(
    directory: Path | None, args: argparse.Namespace, classes: list[str], world: World
) -> dict:
    """The checkpoint as rank 0 reads it, sent to every process (one copy decides the epoch
    and the optimizer state everywhere); a refused checkpoint fails every process alike."""
    if not world.distributed:
        return load_checkpoint(directory, args, classes)
    message: list[Any] = [None]
    if world.main:
        try:
            message = [load_checkpoint(directory, args, classes)]
        except SetupError as e:
            message = [SetupError(str(e))]
    dist.broadcast_object_list(message, src=0)
    if isinstance(message[0], SetupError):
        raise message[0]
    return message[0]


def sync_buffers(model: nn.Module, world: World) -> None:
    """BatchNorm's running statistics from rank 0, so every process evaluates (and rank 0
    saves) one model: DistributedDataParallel averages gradients, not buffers."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def train_and_evaluate(
    args: argparse.Namespace, device: torch.device, out_dir: Path, world: World = SINGLE
) -> None:
    classes, splits = load_data(args)
    if world.main:
        write_json(out_dir / "skipped_files.json", report_skipped(splits))
    for split in splits.values():
        data.require_images(split)
    model = build_model(args, len(classes))
    optimizer, scheduler = build_optimizer(args, model, world.size)
    inject_setup_faults(args, splits, model, optimizer, scheduler)
    loaders = build_loaders(args, splits, world)
    sizes = " ".join(f"{name}={len(s.samples)}" for name, s in splits.items())
    if world.main:
        say(f"[setup] model={args.model} classes={len(classes)} {sizes} device={device}")

    criterion = nn.CrossEntropyLoss()
    ckpt_dir = checkpoint_dir(args)
    state = shared_checkpoint(ckpt_dir, args, classes, world)
    # smdebug runs in rank 0 only: its tensors are one process's (its share of each batch);
    # a hook in every process would write one trial per worker for the rules to merge.
    hook = build_debug_hook(args, resuming=bool(state)) if world.main else None
    if hook is not None:
        attach_hook(hook, model, criterion)
    model.to(device)
    history: list[dict[str, Any]] = []
    start_epoch = 1
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        apply_schedule(optimizer, scheduler)  # --epochs may have been raised
        history = state["history"]
        start_epoch = state["epoch"] + 1
        restore_hook_steps(hook, state.get("debug_steps"))
        if world.main:
            say(f"[setup] resumed from {ckpt_dir / CHECKPOINT_FILE} at epoch {start_epoch}")
    trained: nn.Module = model
    if world.distributed:
        trained = DistributedDataParallel(
            model, device_ids=[world.local_rank] if device.type == "cuda" else None
        )
        say(
            f"[worker] rank={world.rank} train share={len(loaders['train'].sampler)} images "
            f"steps per epoch={len(loaders['train'])} lr={optimizer.param_groups[0]['lr']:g}"
        )

    for epoch in range(start_epoch, args.epochs + 1):
        started = time.time()
        lr = optimizer.param_groups[0]["lr"]
        seed_everything(args.seed + epoch)  # same shuffle/augmentation with or without resume
        loaders["train"].generator.manual_seed(args.seed + epoch)
        if isinstance(loaders["train"].sampler, DistributedSampler):
            loaders["train"].sampler.set_epoch(epoch)
        if epoch == nan_epoch(args):
            poison(model)
        set_mode(hook, ModeKeys.TRAIN)
        train_stats = train_one_epoch(
            trained, criterion, optimizer, loaders["train"], device, world
        )
        if world.main:
            print_metrics(epoch, "train", train_stats)
        sync_buffers(model, world)
        set_mode(hook, ModeKeys.EVAL)
        valid_stats = evaluate(model, criterion, loaders["valid"], device, world=world)
        if world.main:
            print_metrics(epoch, "valid", valid_stats)
        scheduler.step()
        history.append(
            {
                "epoch": epoch,
                "lr": lr,
                "seconds": round(time.time() - started, 3),
                "train": asdict(train_stats),
                "valid": asdict(valid_stats),
            }
        )
        if world.distributed:
            history[-1]["processes"] = world.size
        if ckpt_dir is not None and world.main:
            save_checkpoint(
                ckpt_dir,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "args": vars(args),
                    "classes": classes,
                    "history": history,
                    "debug_steps": hook_steps(hook),
                },
            )

    if world.main:
        save_model(model_dir(), model, args, classes)
    # The test split is looked at once, after every training decision was made. PREDICT mode
    # keeps its losses apart from the TRAIN/EVAL steps that the rules compare.
    set_mode(hook, ModeKeys.PREDICT)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    test_stats = evaluate(model, criterion, loaders["test"], device, confusion, world)
    if not world.main:
        return
    print_metrics(metrics.FINAL_EPOCH, "test", test_stats)
    write_json(out_dir / "history.json", {"epochs": history, "test": asdict(test_stats)})
    write_json(
        out_dir / metrics.CONFUSION_FILE, metrics.confusion_record(classes, confusion.tolist())
    )
    # The baseline is the whole validation split's, in its order: not rank 0's share of it.
    valid = whole_split(loaders["valid"], args)
    baseline.write_model_baseline(model_dir(), valid, splits["valid"], classes, out_dir)
    explain.record_explanations(model_dir(), splits["test"].samples, out_dir, channel_dir("test"))

    run_rules_now = args.run_rules if args.run_rules is not None else hook is not None
    if hook is not None:
        close_hook(hook)
    if run_rules_now:
        run_rules(hook.out_dir if hook is not None else None, out_dir)


def report_failure(message: str) -> None:
    """One line on stderr, and SageMaker's failure file (FailureReason) when running there."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    output_dir = os.environ.get("SM_OUTPUT_DIR")
    if output_dir and Path(output_dir).is_dir():
        (Path(output_dir) / "failure").write_text(message + "\n")


def main(args: argparse.Namespace) -> None:
    try:
        run(args)
    except (data.DataError, SetupError) as e:
        report_failure(str(e))
        sys.exit(2)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
