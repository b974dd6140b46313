"""A one-node SLURM cluster on localhost, for tests and for trying `--launcher slurm` on a laptop.

    sudo apt-get install -y slurm-wlm munge          # Debian/Ubuntu; SLURM 22.05 on Debian 12
    sudo python tests/slurm_cluster.py start /tmp/slurm   # prints the `export SLURM_CONF=...` line
    sudo python tests/slurm_cluster.py stop /tmp/slurm

It starts munged (as user munge, with the key the package created, or a new one) unless one already
answers, writes slurm.conf for this host into the folder (state, spool, pid and log files there too;
free ports picked so a system SLURM is not disturbed) and starts slurmctld and slurmd with SLURM_CONF
set. `stop` ends the daemons it started, by their pid files. Root is needed to start munged as munge
and for slurmd (it runs jobs as their owner).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

DAEMONS = ("slurmctld", "slurmd", "munged")
MUNGE_KEY = "/etc/munge/munge.key"


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the local cluster; the message says why (tests skip with it)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)


def _munge_answers() -> bool:
    if not shutil.which("munge"):
        return False
    try:
        encoded = _run(["munge", "-n"])
        return encoded.returncode == 0 and _run(["unmunge"], input=encoded.stdout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munged(folder: str) -> int | None:
    """Start munged as user munge; returns its pid, or None when one already answers."""
    if _munge_answers():
        return None
    if os.geteuid() != 0:
        raise ClusterUnavailable("munged is not running and starting it needs root")
    if not os.path.exists(MUNGE_KEY):  # the Debian package creates one; make one if it did not
        with open(MUNGE_KEY, "wb") as f:
            f.write(os.urandom(128))
        shutil.chown(MUNGE_KEY, "munge", "munge")
        os.chmod(MUNGE_KEY, 0o400)
    os.makedirs("/run/munge", exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    # munged (user munge) cannot reach a folder under root's private temp dirs: its pid file goes beside its socket
    pid_file = "/run/munge/munged-maskedbert.pid"
    done = _run(["runuser", "-u", "munge", "--", "munged", "--pid-file", pid_file, "--force"])
    if done.returncode != 0:
        raise ClusterUnavailable(f"munged did not start: {done.stderr.strip()}")
    for _ in range(50):
        if _munge_answers():
            return int(open(pid_file).read().split()[0])
        time.sleep(0.1)
    raise ClusterUnavailable("munged started but does not answer")


def _write_conf(folder: str) -> str:
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "log"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    conf = f"""# one-node SLURM on localhost (tests/slurm_cluster.py)
ClusterName=maskedbert-local
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    path = os.path.join(folder, "slurm.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def start(folder: str, timeout: float = 60.0) -> dict:
    """Start the cluster; returns {"conf": path to slurm.conf, "folder": folder}; raises ClusterUnavailable."""
    missing = [d for d in ("slurmctld", "slurmd", "sbatch", "munged") if not shutil.which(d)]
    if missing:
        raise ClusterUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurmd must run as root")
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    munged_pid = _start_munged(folder)
    with open(os.path.join(folder, "started.json"), "w") as f:
        json.dump({"munged_pid": munged_pid}, f)
    conf = _write_conf(folder)
    env = dict(os.environ, SLURM_CONF=conf)
    for daemon in ("slurmctld", "slurmd"):
        done = _run([daemon], env=env)
        if done.returncode != 0:
            stop(folder)
            raise ClusterUnavailable(f"{daemon} did not start: {done.stderr.strip()[-300:]}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _run(["sinfo", "-h", "-o", "%T"], env=env)
        if state.returncode == 0 and state.stdout.strip().rstrip("*") in ("idle", "mixed", "allocated"):
            return {"conf": conf, "folder": folder}
        time.sleep(0.5)
    stop(folder)
    raise ClusterUnavailable(f"the node did not become idle within {timeout:.0f} s (logs in {folder}/log)")


def _pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop(folder: str) -> None:
    """End the daemons this folder's cluster started (by their pid files), waiting until they are gone."""
    pids = [_pid(os.path.join(folder, f"{d}.pid")) for d in ("slurmd", "slurmctld")]
    try:
        with open(os.path.join(folder, "started.json")) as f:
            pids.append(json.load(f).get("munged_pid"))
    except (OSError, ValueError):
        pass
    for pid in [p for p in pids if p]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(f"usage: {sys.argv[0]} start|stop FOLDER")
    if sys.argv[1] == "stop":
        stop(sys.argv[2])
        sys.exit(0)
    try:
        cluster = start(sys.argv[2])
    except ClusterUnavailable as exc:
        sys.exit(f"slurm_cluster: {exc}")
    print(f"export SLURM_CONF={cluster['conf']}")
