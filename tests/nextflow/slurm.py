"""A one-machine SLURM cluster for the tests: munged, slurmctld and slurmd of Debian's munge
and slurm-wlm (``make test`` installs them), run as root with every file in one temporary
folder, this host the controller and its only node (2 CPUs, one GPU whose device file is
/dev/null: SLURM hands it out, and sets CUDA_VISIBLE_DEVICES, as it would a real one)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "sbatch")
FAST_POLLING = "executor {\n    pollInterval = '1 sec'\n    queueStatInterval = '5 sec'\n}\n"
"""A config making Nextflow look for finished jobs every second (conf/slurm_gpu.config: every
30 s, right for a shared cluster, slow for a test on this one)."""


def missing() -> list[str]:
    """The programs the cluster needs that are not installed."""
    return [
        name
        for name in DAEMONS
        if shutil.which(name, path=f"{os.environ['PATH']}:/usr/sbin") is None
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _conf(folder: Path) -> str:
    host = socket.gethostname()
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 * 9 // 10
    return f"""ClusterName=tssc-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs=2 RealMemory={memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _run(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stdout}{proc.stderr}")


def _stop(pid_file: Path) -> None:
    if pid_file.exists():
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


@contextmanager
def cluster(folder: Path) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd in ``folder``; yield the environment whose
    ``SLURM_CONF`` names the cluster; stop the three daemons by their pids."""
    munge = folder / "munge"
    for sub in (munge, folder / "state", folder / "spool"):
        sub.mkdir(parents=True)
    folder.chmod(0o755)  # munged refuses a socket folder others cannot reach
    munge.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{os.environ['PATH']}:/usr/sbin",
        "SLURM_CONF": str(folder / "slurm.conf"),
    }
    (folder / "slurm.conf").write_text(_conf(folder))
    (folder / "gres.conf").write_text("Name=gpu Count=1 File=/dev/null\n")
    key = munge / "munge.key"
    pid_files = [folder / "slurmd.pid", folder / "slurmctld.pid", munge / "munged.pid"]
    try:
        _run("mungekey", "--create", f"--keyfile={key}", env=env)
        key.chmod(0o600)
        _run(
            "munged", "--force", f"--socket={munge}/munge.socket", f"--key-file={key}",
            f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
            f"--seed-file={munge}/munged.seed", env=env,
        )  # fmt: skip
        _run("slurmctld", "-i", env=env)
        _run("slurmd", env=env)
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
            ).stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node did not come up ({state!r}): see {folder}")
            time.sleep(0.5)
        yield env
    finally:
        for pid_file in pid_files:
            _stop(pid_file)
