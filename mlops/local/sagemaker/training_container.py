"""The container of a training job, laid out on this machine: SageMaker's /opt/ml contract.

A job directory mirrors the container's /opt/ml tree (input/data/<channel>, input/config,
model, output/data, output/tensors, checkpoints, code). `JobContainer` fills it the way
SageMaker fills the container before the script starts (input config files, channels from S3
- copied in File mode, placeholders fetched on first open in FastFile mode, see fastfile.py -
the framework convention's source archive, restored checkpoints) and says how the job starts:
through the training image's own ``train`` entry point (sagemaker-training-toolkit, from
.venv-image) with the image's environment, or, only where a test opts in
(MLOPS_LOCAL_SCRIPT_WITHOUT_TOOLKIT), the script itself with the SM_* contract written out by
hand.

A job of InstanceCount N has N such trees, one per host (algo-1 ... algo-N): algo-1's is the
job directory itself (what is uploaded), the others live in ``hosts/<host>/`` with their own
resourceconfig.json (current_host) and a view of algo-1's channels, source and checkpoints
(hard links, copies where a link is refused). `LocalNetwork` stands in for the cluster's
network: the hosts' names and torchrun's port 7777 are this machine and a free port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mlops.local.paths import PathEscapeError, contained
from mlops.local.sagemaker.aws import (
    AwsClients,
    S3UriError,
    UnsafeKeyError,
    aws_env_for_children,
    extract_tarball,
)
from mlops.local.sagemaker.config import SCRIPT_WITHOUT_TOOLKIT_ENV, SageMakerConfig
from mlops.local.sagemaker.fastfile import ROOTS_ENV, ChannelServer, effective_input_mode
from mlops.local.sagemaker.processes import usable_cores
from mlops.local.sagemaker.training_job import JobFailure, TrainingJob

HOST = "algo-1"
HOSTS_FOLDER = "hosts"
# torchrun's rendezvous port in the PyTorch container (sagemaker_training.torch_distributed).
CONTAINER_MASTER_PORT = "7777"
# SAGEMAKER_TRAINING_MODULE of the PyTorch training image (Dockerfile: ENV ...): the toolkit
# hands the job to the PyTorch container's entry point, which runs the user script.
TOOLKIT_FRAMEWORK_MODULE = "sagemaker_pytorch_container.training:main"
# The image's own ENV lines (deep-learning-containers, pytorch/training/docker/2.6/py3/
# Dockerfile.cpu), apart from paths: unbuffered output is what makes metric lines live.
IMAGE_ENVIRONMENT = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONIOENCODING": "UTF-8",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "DLC_CONTAINER_TYPE": "training",
    "SAGEMAKER_TRAINING_MODULE": TOOLKIT_FRAMEWORK_MODULE,
}


class JobContainer:
    """One job's /opt/ml tree and how its process starts (command and environment)."""

    def __init__(
        self,
        job: TrainingJob,
        config: SageMakerConfig,
        clients: AwsClients,
        data: AwsClients,
        host: str = HOST,
    ) -> None:
        self.job = job
        self.config = config
        self.clients = clients  # the service's own
        self.data = data  # the execution role's: the job's S3 reads and writes
        self.host = host
        self.hosts = host_names(job)
        self.network: LocalNetwork | None = None  # set for a job of several hosts
        # Serves the job's FastFile channels (one for all hosts); None without such a channel.
        self.fastfile: ChannelServer | None = None
        root = job.job_dir if host == HOST else job.job_dir / HOSTS_FOLDER / host
        self.root = root
        self.dirs = {
            "input": root / "input",
            "data": root / "input" / "data",
            "config": root / "input" / "config",
            "model": root / "model",
            "output": root / "output",
            "output_data": root / "output" / "data",
            "code": root / "code",
            "checkpoints": root / "checkpoints",
            "tensors": root / "output" / "tensors",
        }

    def create(self) -> None:
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)

    def check_image(self) -> None:
        """No training image environment is an error, unless the caller opted into the
        script-only fallback (tests of the contract without the toolkit)."""
        if self.config.image_python or self.config.script_without_toolkit:
            return
        raise JobFailure(
            "ClientError: the training image's environment is missing (.venv-image with the "
            "sagemaker-training toolkit): build it with `make image-venv` (or set "
            f"{SCRIPT_WITHOUT_TOOLKIT_ENV}=1 to run the script without the toolkit, for tests)"
        )

    def download_inputs(self, say: Callable[[str], None]) -> None:
        """Config files, every channel, the source and the checkpoints, as SageMaker does."""
        self.write_input_config()
        for channel in self.job.request.get("InputDataConfig", []):
            self.download_channel(channel, say)
        self.fetch_source()
        self.restore_checkpoints(say)

    def host_container(self, host: str) -> JobContainer:
        """The tree of another host of this job (hosts/<host>/), same job, same clients."""
        other = JobContainer(self.job, self.config, self.clients, self.data, host)
        other.network = self.network
        return other

    def close(self) -> None:
        """Stop what the job's processes used (the FastFile channel server)."""
        if self.fastfile is not None:
            self.fastfile.stop()

    def replicate_to(self, other: JobContainer) -> None:
        """Give another host what SageMaker gives every instance: its own input config, every
        channel (FullyReplicated), the source and the restored checkpoints, from algo-1's
        downloads (linked, not downloaded again)."""
        other.create()
        other.fastfile = self.fastfile  # its FastFile placeholders are fetched from it too
        other.write_input_config()
        for channel in self.job.request.get("InputDataConfig", []):
            name = channel["ChannelName"]
            distribution = (
                channel.get("DataSource", {})
                .get("S3DataSource", {})
                .get("S3DataDistributionType", "FullyReplicated")
            )
            if distribution != "FullyReplicated":
                raise JobFailure(
                    f"ClientError: channel {name!r}: S3DataDistributionType {distribution} with "
                    "more than one instance is not emulated locally; use FullyReplicated"
                )
            link_tree(self.dirs["data"] / name, other.dirs["data"] / name)
        link_tree(self.dirs["code"], other.dirs["code"])
        if "CheckpointConfig" in self.job.request and self.checkpoint_dir().is_dir():
            link_tree(self.checkpoint_dir(), other.checkpoint_dir())

    def write_input_config(self) -> None:
        request = self.job.request
        config_dir = self.dirs["config"]
        resource = request.get("ResourceConfig") or {}
        write_json(config_dir / "hyperparameters.json", request.get("HyperParameters") or {})
        write_json(
            config_dir / "resourceconfig.json",
            {
                "current_host": self.host,
                "current_instance_type": resource.get("InstanceType", "local"),
                "current_group_name": "homogeneousCluster",
                "hosts": self.hosts,
                "instance_groups": [
                    {
                        "instance_group_name": "homogeneousCluster",
                        "instance_type": resource.get("InstanceType", "local"),
                        "hosts": self.hosts,
                    }
                ],
                "network_interface_name": "eth0",
            },
        )
        write_json(
            config_dir / "inputdataconfig.json",
            {
                c["ChannelName"]: {
                    "TrainingInputMode": c.get("InputMode")
                    or request["AlgorithmSpecification"].get("TrainingInputMode", "File"),
                    "S3DistributionType": c.get("DataSource", {})
                    .get("S3DataSource", {})
                    .get("S3DataDistributionType", "FullyReplicated"),
                    "RecordWrapperType": c.get("RecordWrapperType", "None"),
                    **({"ContentType": c["ContentType"]} if "ContentType" in c else {}),
                }
                for c in request.get("InputDataConfig", [])
            },
        )
        if "DebugHookConfig" in request and self.job.debugger_available:
            write_json(config_dir / "debughookconfig.json", self.debug_hook_config())
        if "CheckpointConfig" in request:
            write_json(
                config_dir / "checkpointconfig.json",
                {
                    "LocalPath": str(self.checkpoint_dir()),
                    "S3Path": request["CheckpointConfig"]["S3Uri"],
                },
            )

    def debug_hook_config(self) -> dict[str, Any]:
        """The file SageMaker writes for smdebug (SMDEBUG_CONFIG_FILE_PATH), paths made local."""
        hook = self.job.request["DebugHookConfig"]
        config: dict[str, Any] = {
            "LocalPath": str(self.tensor_dir()),
            "S3OutputPath": hook["S3OutputPath"],
        }
        if "HookParameters" in hook:
            config["HookParameters"] = hook["HookParameters"]
        if "CollectionConfigurations" in hook:
            config["CollectionConfigurations"] = hook["CollectionConfigurations"]
        return config

    def container_path(self, path: str | None, default: Path) -> Path:
        """Map a container path (/opt/ml/...) into the job directory; other paths stay."""
        if not path:
            return default
        if not path.startswith("/opt/ml/"):
            raise JobFailure(
                f"ClientError: the local SageMaker maps only /opt/ml/... into the job folder; "
                f"{path!r} would be a path on this machine: use a path under /opt/ml/"
            )
        try:
            return contained(self.root, path.removeprefix("/opt/ml/"))
        except PathEscapeError as error:
            raise JobFailure(
                f"ClientError: LocalPath {path!r} resolves outside the job folder "
                f"{self.root}: refused"
            ) from error

    def tensor_dir(self) -> Path:
        hook = self.job.request.get("DebugHookConfig") or {}
        return self.container_path(hook.get("LocalPath"), self.dirs["tensors"])

    def checkpoint_dir(self) -> Path:
        checkpoint = self.job.request.get("CheckpointConfig") or {}
        return self.container_path(checkpoint.get("LocalPath"), self.dirs["checkpoints"])

    def download_channel(self, channel: dict[str, Any], say: Callable[[str], None]) -> None:
        name = channel["ChannelName"]
        source = channel.get("DataSource", {})
        s3_source = source.get("S3DataSource")
        if s3_source is None:
            raise JobFailure(
                f"ClientError: channel {name!r}: the local SageMaker reads S3DataSource only "
                f"(got {', '.join(source) or 'no data source'})"
            )
        if s3_source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise JobFailure(
                f"ClientError: channel {name!r}: S3DataType {s3_source['S3DataType']} is not "
                "supported locally; use S3Prefix"
            )
        mode = effective_input_mode(channel, self.job.request)
        if mode == "Pipe":
            raise JobFailure(
                f"ClientError: channel {name!r}: Pipe input mode is not emulated locally; "
                "use File or FastFile"
            )
        uri = s3_source["S3Uri"]
        try:
            target = contained(self.dirs["data"], name)
            if mode == "FastFile":
                count = self.fastfile_server().lay_out_channel(name, uri, target)
            else:
                count = self.data.download_prefix(uri, target)
        except (PathEscapeError, UnsafeKeyError) as error:
            raise JobFailure(f"ClientError: channel {name!r}: {error}") from error
        except (FileNotFoundError, S3UriError, ClientError, BotoCoreError) as error:
            raise JobFailure(
                f"ClientError: Data download failed:{error}. Please ensure that the bucket "
                "exists in the selected region and that objects exist under that S3 prefix."
            ) from error
        if mode == "FastFile":
            say(f"Listed {count} objects for FastFile channel {name} from {uri} (read on open)")
        else:
            say(f"Downloaded {count} files for channel {name} from {uri}")

    def fastfile_server(self) -> ChannelServer:
        """The job's FastFile channel server, started on first use (the role's S3 access)."""
        if self.fastfile is None:
            self.fastfile = ChannelServer(self.data).start()
        return self.fastfile

    def fetch_source(self) -> None:
        """Unpack sagemaker_submit_directory (an S3 or file:// tar.gz) into the code dir."""
        hyperparameters = self.job.hyperparameters
        program = hyperparameters.get("sagemaker_program")
        submit = hyperparameters.get("sagemaker_submit_directory")
        if not program or not submit:
            raise JobFailure(
                "ClientError: the local SageMaker runs framework-style jobs only: set the "
                "hyperparameters sagemaker_program (the entry point, e.g. train.py) and "
                "sagemaker_submit_directory (s3://.../sourcedir.tar.gz)"
            )
        archive = self.job.job_dir / "sourcedir.tar.gz"
        try:
            if str(submit).startswith("file://"):
                shutil.copyfile(str(submit).removeprefix("file://"), archive)
            else:
                self.data.download_file(str(submit), archive)
            extract_tarball(archive, self.dirs["code"])
        except (OSError, S3UriError, ClientError, BotoCoreError) as error:
            raise JobFailure(
                f"ClientError: could not fetch the training source {submit}: {error}"
            ) from error
        try:
            entry_point = contained(self.dirs["code"], str(program))
        except PathEscapeError as error:
            raise JobFailure(f"ClientError: sagemaker_program {error}") from error
        if not entry_point.is_file():
            raise JobFailure(
                f"ClientError: the entry point {program!r} is not in {submit} "
                f"(found: {', '.join(sorted(p.name for p in self.dirs['code'].iterdir()))})"
            )

    def restore_checkpoints(self, say: Callable[[str], None]) -> None:
        """Copy CheckpointConfig.S3Uri into the local checkpoint dir, as SageMaker does."""
        checkpoint = self.job.request.get("CheckpointConfig")
        if not checkpoint:
            return
        target = self.checkpoint_dir()
        target.mkdir(parents=True, exist_ok=True)
        try:
            count = self.data.download_prefix(checkpoint["S3Uri"], target)
            say(f"Restored {count} checkpoint files from {checkpoint['S3Uri']}")
        except FileNotFoundError:
            pass  # no checkpoints yet: a first run
        except UnsafeKeyError as error:
            raise JobFailure(f"ClientError: checkpoints: {error}") from error
        except (ClientError, BotoCoreError, S3UriError) as error:
            raise JobFailure(f"ClientError: could not read checkpoints: {error}") from error

    # --- the process --------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The Deep Learning Container's own start: the toolkit's ``train`` entry point, which
        reads the /opt/ml layout, installs the source's requirements.txt and runs the script."""
        if self.config.image_python:
            return [str(Path(self.config.image_python).parent / "train")]
        job = self.job
        program = str(job.hyperparameters["sagemaker_program"])
        args = to_cmd_args(job.user_hyperparameters())
        if program.endswith(".sh"):
            return ["/bin/sh", program, *args]
        return [self.config.python, program, *args]

    def environment(self) -> dict[str, str]:
        if self.config.image_python:
            env = self.toolkit_environment()
        else:
            env = self.contract_environment()
        if self.fastfile is not None:
            # The hook first on PYTHONPATH: the toolkit passes its sys.path on to the script.
            hook = self.fastfile.environment(self.dirs["data"])
            env[ROOTS_ENV] = hook[ROOTS_ENV]
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (hook["PYTHONPATH"], env.get("PYTHONPATH", "")) if p
            )
        return env

    def toolkit_environment(self) -> dict[str, str]:
        """What the container starts with; every SM_* variable then comes from the toolkit.

        SAGEMAKER_BASE_DIR points the toolkit at the job dir (laid out like /opt/ml);
        SM_STUDIO_LOCAL_MODE is the toolkit's own switch to skip waiting for the DNS names of
        the cluster's hosts (algo-1), which only exist inside SageMaker's network. Nothing of
        this process's Python setup (PYTHONPATH, VIRTUAL_ENV, SM_*) leaks into the job.
        """
        job = self.job
        cpus = usable_cores()
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SM_", "SAGEMAKER_", "SMDEBUG_"))
            and key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        }
        env = {
            **inherited,
            **aws_env_for_children(self.clients),
            **IMAGE_ENVIRONMENT,
            "SAGEMAKER_BASE_DIR": str(self.root),
            "SM_STUDIO_LOCAL_MODE": "true",
            "OMP_NUM_THREADS": str(self.threads_per_host(cpus)),
            "TRAINING_JOB_NAME": job.name,
            "TRAINING_JOB_ARN": job.arn,
        }
        if self.network is not None:
            env.update(self.network.toolkit_environment(env.get("PATH", os.defpath)))
        if "s3" in self.clients.endpoint_urls:  # the toolkit's own S3 override (params.py)
            env["S3_ENDPOINT_URL"] = self.clients.endpoint_urls["s3"]
        if "DebugHookConfig" in job.request and job.debugger_available:
            env["SMDEBUG_CONFIG_FILE_PATH"] = str(self.dirs["config"] / "debughookconfig.json")
        if "CheckpointConfig" in job.request:
            env["CHECKPOINT_CONFIG_FILE_PATH"] = str(self.dirs["config"] / "checkpointconfig.json")
        env.update(job.request.get("Environment") or {})
        return env

    def contract_environment(self) -> dict[str, str]:
        """The SM_* contract written out by hand: only for a checkout without the image's
        virtual environment (.venv-image, `make image-venv`), where the toolkit is missing."""
        job = self.job
        user_hps = job.user_hyperparameters()
        channels = job.channels()
        dirs = self.dirs
        cpus = usable_cores()
        training_env = {
            "job_name": job.name,
            "current_host": self.host,
            "hosts": self.hosts,
            "num_cpus": cpus,
            "num_gpus": 0,
            "model_dir": str(dirs["model"]),
            "output_data_dir": str(dirs["output_data"]),
            "output_dir": str(dirs["output"]),
            "input_dir": str(dirs["input"]),
            "input_config_dir": str(dirs["config"]),
            "channel_input_dirs": {c: str(dirs["data"] / c) for c in channels},
            "hyperparameters": user_hps,
            "user_entry_point": str(job.hyperparameters["sagemaker_program"]),
            "module_dir": str(dirs["code"]),
            "is_master": self.host == self.hosts[0],
            "master_hostname": self.hosts[0],
            "network_interface_name": "eth0",
        }
        env = {
            **os.environ,
            **aws_env_for_children(self.clients),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(dirs["code"]), os.environ.get("PYTHONPATH", "")) if p
            ),
            # Jobs share the cores: keep torch/BLAS from oversubscribing them.
            "OMP_NUM_THREADS": str(self.threads_per_host(cpus)),
            "TRAINING_JOB_NAME": job.name,
            "TRAINING_JOB_ARN": job.arn,
            "SM_MODEL_DIR": str(dirs["model"]),
            "SM_OUTPUT_DIR": str(dirs["output"]),
            "SM_OUTPUT_DATA_DIR": str(dirs["output_data"]),
            "SM_OUTPUT_INTERMEDIATE_DIR": str(dirs["output"] / "intermediate"),
            "SM_INPUT_DIR": str(dirs["input"]),
            "SM_INPUT_CONFIG_DIR": str(dirs["config"]),
            "SM_MODULE_DIR": str(dirs["code"]),
            "SM_USER_ENTRY_POINT": training_env["user_entry_point"],
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HPS": json.dumps(user_hps, sort_keys=True),
            "SM_USER_ARGS": json.dumps(to_cmd_args(user_hps)),
            "SM_CURRENT_HOST": self.host,
            "SM_HOSTS": json.dumps(self.hosts),
            "SM_NETWORK_INTERFACE_NAME": "eth0",
            "SM_NUM_CPUS": str(cpus),
            "SM_NUM_GPUS": "0",
            "SM_LOG_LEVEL": "20",
            "SM_TRAINING_ENV": json.dumps(training_env, sort_keys=True),
            "SM_RESOURCE_CONFIG": (dirs["config"] / "resourceconfig.json").read_text(),
            "SM_INPUT_DATA_CONFIG": (dirs["config"] / "inputdataconfig.json").read_text(),
        }
        if self.network is not None:  # what torchrun would set for one process per host
            env.update(self.network.worker_environment(self.hosts.index(self.host)))
        for channel in channels:
            env[f"SM_CHANNEL_{channel.upper()}"] = str(dirs["data"] / channel)
        for key, value in user_hps.items():
            env[f"SM_HP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        if "DebugHookConfig" in job.request and job.debugger_available:
            env["SMDEBUG_CONFIG_FILE_PATH"] = str(dirs["config"] / "debughookconfig.json")
        if "CheckpointConfig" in job.request:
            env["CHECKPOINT_CONFIG_FILE_PATH"] = str(dirs["config"] / "checkpointconfig.json")
        env.update(job.request.get("Environment") or {})
        return env

    def threads_per_host(self, cpus: int) -> int:
        """Jobs share the cores, and the hosts of one job share its share."""
        return max(1, cpus // self.config.max_concurrent_jobs // len(self.hosts))


def host_names(job: TrainingJob) -> list[str]:
    """algo-1 ... algo-N, SageMaker's names for the instances of a job (sorted as it sorts)."""
    count = int((job.request.get("ResourceConfig") or {}).get("InstanceCount", 1) or 1)
    return [f"algo-{i}" for i in range(1, count + 1)]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (for torchrun's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalNetwork:
    """The network of a job's hosts, on one machine.

    In SageMaker every instance is a container on the cluster's network: ``algo-1`` resolves to
    the first instance, and torchrun's store listens on port 7777 of each container. Here every
    host is this machine, so the names mean 127.0.0.1 and each job gets a free port of its own
    (jobs run side by side). The training toolkit still builds its command as in the container
    (``torchrun --nnodes N --master_addr algo-1 --master_port 7777 --node_rank i ...``); the
    ``torchrun`` it finds first on PATH is a shim that rewrites those two values and runs
    PyTorch's own torchrun, which is all that differs. Gloo's sockets use the loopback
    interface (GLOO_SOCKET_IFNAME=lo) and so bind 127.0.0.1.
    """

    def __init__(self, folder: Path, hosts: list[str], image_python: str | None) -> None:
        self.folder = folder
        self.hosts = hosts
        self.port = free_port()
        self.image_python = image_python

    def write_shim(self) -> Path:
        """<job>/network/bin/torchrun, run by the image's Python."""
        bin_dir = self.folder / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        shim = bin_dir / "torchrun"
        shim.write_text(TORCHRUN_SHIM.format(python=self.image_python, port=self.port))
        shim.chmod(0o755)
        return bin_dir

    def toolkit_environment(self, path: str) -> dict[str, str]:
        bin_dir = self.write_shim()
        image_bin = str(Path(str(self.image_python)).parent)
        return {
            "PATH": os.pathsep.join((str(bin_dir), image_bin, path)),
            "GLOO_SOCKET_IFNAME": "lo",
        }

    def worker_environment(self, rank: int) -> dict[str, str]:
        """torchrun's variables for one process per host (the script-only fallback)."""
        size = str(len(self.hosts))
        return {
            "RANK": str(rank),
            "GROUP_RANK": str(rank),
            "LOCAL_RANK": "0",
            "LOCAL_WORLD_SIZE": "1",
            "WORLD_SIZE": size,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(self.port),
            "GLOO_SOCKET_IFNAME": "lo",
        }


# The shim: algo-N -> 127.0.0.1 and port 7777 -> the job's port, then PyTorch's torchrun.
TORCHRUN_SHIM = """#!{python}
# torchrun as the local SageMaker's network sees it (mlops/local/sagemaker/training_container.py):
# the hosts algo-N are this machine and the job's rendezvous port is {port}.
import sys

from torch.distributed.run import main


def local(argv):
    argv = list(argv)
    for flag, value in (("--master_addr", "127.0.0.1"), ("--master_port", "{port}")):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv[:0] = [flag, value]
    return argv


if __name__ == "__main__":
    sys.exit(main(local(sys.argv[1:])))
"""


def link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of `source` into `target` (copy where linking is refused)."""
    if not source.is_dir():
        return
    for path in source.rglob("*"):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():
            destination.unlink()
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)


def to_cmd_args(hyperparameters: dict[str, Any]) -> list[str]:
    """``{"lr": 0.1}`` -> ``["--lr", "0.1"]``, sorted by name, values via str() (the toolkit's
    rule: a JSON ``true`` therefore arrives as ``True``)."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        value = hyperparameters[key]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"--{key}" if len(key) > 1 else f"-{key}", str(value)]
    return args


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=str))
