"""A stand-in training script for the local SageMaker's tests: no torch, runs in milliseconds.

It honours the parts of the training contract the runner must provide (SM_* variables, the
channels, the model and output dirs, the smdebug hook config, checkpoints) and prints the
contract's metric lines. Its validation loss is (log10(lr) + 2)^2 + 0.5 / epoch, so lr=0.01 is
the optimum a tuning job should find and a large lr is a clearly bad trial.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ENV_KEYS = (
    "SM_CHANNEL_TRAIN",
    "SM_CHANNELS",
    "SM_HPS",
    "SM_MODEL_DIR",
    "SM_OUTPUT_DATA_DIR",
    "SM_NUM_GPUS",
    "SM_NUM_CPUS",
    "SM_CURRENT_HOST",
    "SM_HOSTS",
    "RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SM_TRAINING_ENV",
    "SM_HP_LR",
    "SMDEBUG_CONFIG_FILE_PATH",
    "TRAINING_JOB_NAME",
    "MY_SETTING",
    "PYTHONUNBUFFERED",
)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="fixture training script")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epoch-seconds", type=float, default=0.0)
    parser.add_argument("--fail", default="false")
    parser.add_argument("--fail-on-host", default="", help="fail only on this host (algo-N)")
    parser.add_argument("--write-failure-file", default="false")
    parser.add_argument("--ignore-sigterm", default="false")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--flag", default=None)
    parser.add_argument("--model-version", default="v1")
    parser.add_argument("--crash-on-load", default="false")
    parser.add_argument("--load-seconds", type=float, default=0.0)
    parser.add_argument("--leave-child", default="false")
    return parser


def metric_line(epoch: int | str, split: str, loss: float, accuracy: float) -> str:
    return f"[metric] epoch={epoch} split={split} loss={loss:.6f} accuracy={accuracy:.4f}"


def save_fake_tensors() -> None:
    config_path = os.environ.get("SMDEBUG_CONFIG_FILE_PATH")
    if not config_path:
        return
    config = json.loads(Path(config_path).read_text())
    tensors = Path(config["LocalPath"])
    (tensors / "events").mkdir(parents=True, exist_ok=True)
    (tensors / "events" / "000000000001.json").write_text(json.dumps(config))


def configured_checkpoints() -> Path | None:
    """The CheckpointConfig's LocalPath, from the checkpointconfig.json SageMaker writes."""
    path = os.environ.get("CHECKPOINT_CONFIG_FILE_PATH")
    if not path or not Path(path).is_file():
        return None
    return Path(json.loads(Path(path).read_text())["LocalPath"])


def next_epoch_from_checkpoint(directory: Path | None) -> int:
    if directory is None or not (directory / "state.json").is_file():
        return 1
    return json.loads((directory / "state.json").read_text())["epoch"] + 1


def write_channel_report(channel: Path, report: Path) -> None:
    """Each file of a channel: its size and blocks on disk before the script read it, then
    what it read (with Python's open, as a real script does). In FastFile mode nothing should
    be on disk before the read."""
    files = {}
    for path in sorted(p for p in channel.rglob("*") if p.is_file()):
        before = path.stat()
        text = path.read_text()
        files[path.relative_to(channel).as_posix()] = {
            "size": before.st_size,
            "blocks_before_read": before.st_blocks,
            "blocks_after_read": path.stat().st_blocks,
            "text": text,
        }
    report.write_text(json.dumps(files))


def main(args: argparse.Namespace) -> None:
    if args.ignore_sigterm.lower() == "true":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    train_dir = Path(os.environ["SM_CHANNEL_TRAIN"])
    files = sorted(p for p in train_dir.rglob("*") if p.is_file())
    print(f"training {args.model} on {len(files)} files", flush=True)
    output_data = Path(os.environ["SM_OUTPUT_DATA_DIR"])
    output_data.mkdir(parents=True, exist_ok=True)
    env = {key: os.environ.get(key) for key in ENV_KEYS}
    (output_data / "env.json").write_text(json.dumps({"env": env, "argv": sys.argv[1:]}))
    write_channel_report(train_dir, output_data / "channel.json")
    save_fake_tensors()
    checkpoints = Path(args.checkpoint_dir) if args.checkpoint_dir else configured_checkpoints()
    first_epoch = next_epoch_from_checkpoint(checkpoints)
    print(f"starting at epoch {first_epoch}", flush=True)
    base = (math.log10(args.lr) + 2) ** 2
    history = []
    for epoch in range(first_epoch, args.epochs + 1):
        if args.fail.lower() == "true" or args.fail_on_host == os.environ.get("SM_CURRENT_HOST"):
            if args.write_failure_file.lower() == "true":
                failure = Path(os.environ["SM_OUTPUT_DATA_DIR"]).parent / "failure"
                failure.write_text("the data set has no valid images")
            print("Traceback (most recent call last):", flush=True)
            raise ValueError("synthetic failure in epoch 1")
        train_loss, valid_loss = base + 1.0 / epoch, base + 0.5 / epoch
        print(metric_line(epoch, "train", train_loss, 0.5), flush=True)
        print(metric_line(epoch, "valid", valid_loss, 0.6), flush=True)
        history.append({"epoch": epoch, "valid_loss": valid_loss})
        if checkpoints is not None:
            checkpoints.mkdir(parents=True, exist_ok=True)
            (checkpoints / "state.json").write_text(json.dumps({"epoch": epoch}))
        time.sleep(args.epoch_seconds)
    print(metric_line("final", "test", base + 0.4, 0.7), flush=True)
    model_dir = Path(os.environ["SM_MODEL_DIR"])
    (model_dir / "model.pth").write_bytes(b"fake weights")
    info = {
        "version": args.model_version,
        "crash_on_load": args.crash_on_load.lower() == "true",
        "load_seconds": args.load_seconds,
    }
    (model_dir / "model_info.json").write_text(json.dumps(info))
    (model_dir / "code").mkdir(exist_ok=True)
    shutil.copy(Path(__file__).with_name("inference.py"), model_dir / "code" / "inference.py")
    (output_data / "history.json").write_text(json.dumps(history))
    if args.leave_child.lower() == "true":
        # a forgotten background process that keeps the log pipe open
        subprocess.Popen(["sleep", "300"])


if __name__ == "__main__":
    main(get_args_parser().parse_args())
