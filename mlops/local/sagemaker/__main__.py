"""Run the local SageMaker on its own: ``python -m mlops.local.sagemaker --state-dir DIR``.

Prints the URL (and writes it to ``--url-file`` when given) and serves until SIGTERM/SIGINT,
then stops every job and model server it started. ``mlops up`` may embed the service instead
(LocalSageMakerService); this entry point is for running it as a separate process.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from mlops.local.sagemaker.config import SageMakerConfig
from mlops.local.sagemaker.service import LocalSageMakerService


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve the local SageMaker on 127.0.0.1.")
    parser.add_argument("--state-dir", type=Path, required=True, help="jobs, endpoints, logs")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: a free one)")
    parser.add_argument(
        "--max-concurrent-jobs", type=int, default=1, help="training jobs running at once"
    )
    parser.add_argument("--region", default=None, help="region of ARNs (default: from env)")
    parser.add_argument(
        "--endpoint-url",
        action="append",
        default=[],
        metavar="SERVICE=URL",
        help="boto3 endpoint for a service the jobs use, e.g. s3=http://127.0.0.1:5000",
    )
    parser.add_argument(
        "--debugger-available",
        action="store_true",
        help="act like an account that still has SageMaker Debugger (hook config, rule jobs)",
    )
    parser.add_argument("--url-file", type=Path, default=None, help="write the URL here")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def parse_endpoint_urls(items: list[str]) -> dict[str, str]:
    urls = {}
    for item in items:
        service, separator, url = item.partition("=")
        if not separator or not url:
            raise SystemExit(f"--endpoint-url wants SERVICE=URL, got {item!r}")
        urls[service] = url
    return urls


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings: dict[str, Any] = {
        "state_dir": args.state_dir,
        "max_concurrent_jobs": args.max_concurrent_jobs,
        "aws_endpoint_urls": parse_endpoint_urls(args.endpoint_url),
        "debugger_available": args.debugger_available,
    }
    if args.region:
        settings["region"] = args.region
    service = LocalSageMakerService(SageMakerConfig(**settings), port=args.port).start()
    if args.url_file is not None:
        args.url_file.write_text(service.url)
    print(service.url, flush=True)
    done = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        done.wait()
    finally:
        service.shutdown()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
