"""The local cloud as a process: `python -m mlops.local.server --root .mlops`.

`mlops up` starts this in the background and `mlops down` sends it SIGTERM; tests start it the
same way, so the state of moto's in-process backends never mixes with tests that use mock_aws.
It prints one line `READY <json>` on stdout once every service answers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from mlops.local.cloud import LocalCloud
from mlops.local.process import CloudLockedError
from mlops.packaging import REPO_ROOT


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(".mlops"), help="state directory")
    parser.add_argument(
        "--template", type=Path, default=REPO_ROOT / "template.yaml", help="SAM template to deploy"
    )
    parser.add_argument(
        "--config-env", default="local", help="samconfig.toml environment with parameter overrides"
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter override (repeatable), applied after samconfig.toml",
    )
    parser.add_argument(
        "--no-iam",
        action="store_true",
        help=(
            "do not enforce the template's IAM roles on the Lambdas' and jobs' calls (to tell a "
            "missing permission from another failure; AWS always enforces them)"
        ),
    )
    parser.add_argument(
        "--exit-with-pid",
        type=int,
        default=None,
        help="stop when this process ends (tests: a killed test run leaves no cloud behind)",
    )
    return parser


def watch_process(pid: int, stopping: threading.Event, interval_s: float = 1.0) -> None:
    """Set `stopping` once `pid` is gone; runs in a daemon thread."""
    while not stopping.wait(interval_s):
        try:
            os.kill(pid, 0)
        except OSError:
            logging.warning("process %d ended: stopping the local cloud", pid)
            stopping.set()


def main(args: argparse.Namespace) -> int:
    args.root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=args.root / "cloud.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = dict(item.split("=", 1) for item in args.parameter)
    cloud = LocalCloud(
        args.root,
        template=args.template.resolve(),
        config_env=args.config_env,
        parameter_overrides=overrides,
        enforce_iam=not args.no_iam,
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        info = cloud.start()
    except CloudLockedError as exc:
        logging.error("%s", exc)
        print(f"LOCKED {exc}", flush=True)
        return 1
    except Exception as exc:
        logging.exception("local cloud failed to start")
        print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
        return 1
    if args.exit_with_pid:
        threading.Thread(
            target=watch_process, args=(args.exit_with_pid, stopping), daemon=True
        ).start()
    print("READY " + json.dumps(info.to_json()), flush=True)
    try:
        stopping.wait()
    finally:
        cloud.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
