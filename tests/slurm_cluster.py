"""A real single-node SLURM cluster for the tests, with accounting, in a temporary directory.

Debian's SLURM 22.05 (slurmctld, slurmd, slurmdbd), MUNGE and MariaDB, each started as its own
daemon with every state, spool, log, pid and socket file under one temporary directory, on free
TCP ports; ``stop()`` ends exactly the daemons ``start()`` started, by the pids they wrote.
Clients (sbatch, squeue, sacct, scontrol) find the cluster through ``SLURM_CONF`` in ``env``;
commands inside jobs through a /run/slurm/conf link made for the cluster's lifetime.

The node has two fake GPUs (a GPU GRES on character devices such as /dev/null) so that rules
asking for ``gpu`` are scheduled as on a GPU cluster; the jobs themselves run on the CPU.

``python3 tests/slurm_cluster.py install`` installs the packages (root, apt-get; .ci/run).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server"]
DAEMONS = {
    "munged": "munge",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "slurmdbd": "slurmdbd",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
    "sacct": "slurm-client",
}
PATH_EXTRA = ("/usr/sbin", "/usr/bin", "/sbin")
# Where SLURM commands look for slurm.conf when SLURM_CONF is unset: the default path, then the
# copy a configless slurmd keeps. Commands inside jobs need the latter, because the executor
# plugin removes SLURM_* variables (SLURM_CONF included) before the job's srun.
ETC_CONF = Path("/etc/slurm/slurm.conf")
RUN_CONF = Path("/run/slurm/conf")
FAKE_GPUS = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be installed or started here (not a failure of the code under test)."""


def _which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *PATH_EXTRA])
    return shutil.which(name, path=path)


def missing_programs() -> list[str]:
    return [name for name in DAEMONS if _which(name) is None]


def install(timeout: float = 600) -> None:
    """apt-get install the cluster's packages (root on Debian/Ubuntu only); no service starts."""
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            f"SLURM programs missing ({', '.join(missing_programs())}) and not root: install "
            f"them with apt-get install {' '.join(PACKAGES)}"
        )
    apt = _which("apt-get")
    if apt is None:
        raise ClusterUnavailable(
            f"SLURM programs missing ({', '.join(missing_programs())}) and no apt-get here"
        )
    # Package scripts must not start system-wide daemons (munge, mariadb): the tests run their
    # own. policy-rc.d is Debian's switch for that; add one only for this install.
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = not policy.exists()
    if added_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for args in (
            [apt, "-q", "update"],
            [apt, "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
        ):
            res = subprocess.run(
                args, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
            if res.returncode != 0:
                raise ClusterUnavailable(
                    f"{' '.join(args)} failed ({res.returncode}):\n{res.stderr[-2000:]}"
                )
    finally:
        if added_policy:
            policy.unlink(missing_ok=True)
    if missing_programs():
        raise ClusterUnavailable(f"still missing after apt-get: {', '.join(missing_programs())}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def total_memory_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read /proc/meminfo")


class SlurmCluster:
    """One controller, one node (``localhost``), one partition, accounting through slurmdbd."""

    name = "agemapper-test"
    partition = "debug"

    def __init__(self, root: Path | None = None, gpus: int = 2):
        if root is None:
            # munged insists that every directory above its socket is executable by all; the
            # pytest base directory is root-only, so the cluster lives in its own directory.
            root = Path(tempfile.mkdtemp(prefix="agemapper-slurm-"))
        self.root = Path(root)
        self.gpus = gpus
        self.cpus = os.cpu_count() or 1
        self.memory_mb = int(total_memory_mb() * 0.9)
        self.pids: dict[str, int] = {}
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.db_socket = self.root / "mariadb" / "mysqld.sock"
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PATH": os.pathsep.join([os.environ.get("PATH", ""), *PATH_EXTRA]),
        }

    # ------------------------------------------------------------------ configuration

    def _write_configs(self) -> None:
        r = self.root
        for sub in ("etc", "munge", "mariadb/data", "state", "spool", "log", "run"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge", 0o755)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.ports = {"ctld": free_port(), "slurmd": free_port(), "dbd": free_port()}
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        self.conf.write_text(
            f"""# single-node test cluster (written by tests/slurm_cluster.py)
ClusterName={self.name}
SlurmctldHost={socket.gethostname().split(".")[0]}(127.0.0.1)
SlurmctldPort={self.ports["ctld"]}
SlurmdPort={self.ports["slurmd"]}
SlurmUser=root
SlurmdUser=root
{auth}CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
MinJobAge=600
KillWait=30
InactiveLimit=0
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={self.ports["dbd"]}
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} \
Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )
        # a GPU GRES needs a device file; character devices every machine has stand in
        (r / "etc" / "gres.conf").write_text(
            "".join(f"NodeName=localhost Name=gpu File={dev}\n" for dev in FAKE_GPUS[: self.gpus])
        )
        dbd = r / "etc" / "slurmdbd.conf"
        dbd.write_text(
            f"""{auth}DbdHost=localhost
DbdPort={self.ports["dbd"]}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={r}/run/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
"""
        )
        dbd.chmod(0o600)

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, args: list, pidfile: Path, env: dict | None = None) -> None:
        """Start a daemon that forks itself, then record the pid it writes."""
        res = subprocess.run(
            args, env=env or self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if res.returncode != 0:
            raise RuntimeError(f"{name} failed to start ({res.returncode}): {res.stderr[-2000:]}")
        self._wait(lambda: pidfile.exists() and pidfile.read_text().strip(), f"{name} pid file")
        self.pids[name] = int(pidfile.read_text().split()[0])

    def _wait(self, condition, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}; the cluster's logs:\n{self.logs()}")

    def _ok(self, *args) -> bool:
        res = subprocess.run(args, env=self.env, capture_output=True, text=True, check=False)
        return res.returncode == 0

    def start(self) -> SlurmCluster:
        r = self.root
        self._write_configs()
        self._link_run_conf()
        try:
            self._spawn(
                "munged",
                [
                    _which("munged"),
                    f"--socket={self.munge_socket}",
                    f"--key-file={r}/munge/munge.key",
                    f"--pid-file={r}/run/munged.pid",
                    f"--log-file={r}/log/munged.log",
                    f"--seed-file={r}/munge/munged.seed",
                ],
                r / "run" / "munged.pid",
            )
            self._start_mariadb()
            env = {**self.env, "MYSQL_UNIX_PORT": str(self.db_socket)}
            self._spawn(
                "slurmdbd",
                [_which("slurmdbd")],  # reads slurmdbd.conf beside SLURM_CONF
                r / "run" / "slurmdbd.pid",
                env=env,
            )
            self._wait(lambda: self._ok("sacctmgr", "-n", "list", "cluster"), "slurmdbd")
            self._spawn("slurmctld", [_which("slurmctld"), "-c"], r / "run" / "slurmctld.pid")
            self._spawn("slurmd", [_which("slurmd"), "-N", "localhost"], r / "run" / "slurmd.pid")
            self._wait(self._node_idle, "the node to become idle")
            self._wait(self._cluster_registered, "slurmctld to register with slurmdbd")
        except Exception:
            self.stop()
            raise
        return self

    def _link_run_conf(self) -> None:
        if ETC_CONF.exists():
            raise ClusterUnavailable(
                f"{ETC_CONF} exists: jobs would use that cluster's configuration, not the test's"
            )
        if RUN_CONF.is_symlink() and not RUN_CONF.exists():
            RUN_CONF.unlink()  # left by a killed test run
        if RUN_CONF.exists():
            raise ClusterUnavailable(
                f"{RUN_CONF} -> {os.path.realpath(RUN_CONF)} exists: a configless slurmd or another"
                " test cluster (its daemons' pids are in run/*.pid beside that etc/) uses it"
            )
        self._made_run_dir = not RUN_CONF.parent.exists()
        RUN_CONF.parent.mkdir(parents=True, exist_ok=True)
        RUN_CONF.symlink_to(self.conf.parent)
        self._linked = True

    def _unlink_run_conf(self) -> None:
        if getattr(self, "_linked", False) and RUN_CONF.is_symlink():
            RUN_CONF.unlink()
            if self._made_run_dir:
                RUN_CONF.parent.rmdir()
        self._linked = False

    def _start_mariadb(self) -> None:
        r = self.root
        data = r / "mariadb" / "data"
        res = subprocess.run(
            [
                _which("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {res.stdout[-1000:]}{res.stderr}")
        log = open(r / "log" / "mariadbd.log", "ab")  # noqa: SIM115 - the daemon's stdio
        proc = subprocess.Popen(
            [
                _which("mariadbd"),
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={self.db_socket}",
                f"--pid-file={r}/run/mariadbd.pid",
                "--skip-networking",
                "--user=root",
                "--innodb-buffer-pool-size=64M",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pids["mariadbd"] = proc.pid
        self._mariadb = proc
        self._wait(lambda: self.db_socket.exists() or proc.poll() is not None, "mariadbd")
        if proc.poll() is not None:
            raise RuntimeError("mariadbd exited:\n" + self.logs())

    def _node_idle(self) -> bool:
        res = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"], env=self.env, capture_output=True, text=True
        )
        return res.returncode == 0 and res.stdout.strip() == "idle"

    def _cluster_registered(self) -> bool:
        res = subprocess.run(
            ["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster,controlport"],
            env=self.env,
            capture_output=True,
            text=True,
        )
        return f"{self.name}|{self.ports['ctld']}" in res.stdout

    def stop(self) -> None:
        """Stop the daemons this object started, newest first, each by its own pid.

        Jobs still queued or running (a test that failed half way) are cancelled through the
        cluster first, so that none of their processes outlives it.
        """
        if "slurmctld" in self.pids and "slurmd" in self.pids:
            self._cancel_jobs()
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            if name == "mariadbd":
                try:
                    self._mariadb.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.kill(pid, signal.SIGKILL)
                    self._mariadb.wait()
                continue
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._unlink_run_conf()

    def _cancel_jobs(self, timeout: float = 60.0) -> None:
        def jobs() -> list[str]:
            res = subprocess.run(
                ["squeue", "-h", "-t", "PD,R,CG,S", "-o", "%i"],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            return res.stdout.split() if res.returncode == 0 else []

        ids = jobs()
        if not ids:
            return
        subprocess.run(["scancel", *ids], env=self.env, capture_output=True, check=False)
        deadline = time.monotonic() + timeout
        while jobs() and time.monotonic() < deadline:
            time.sleep(0.5)

    # ------------------------------------------------------------------ helpers

    def run(self, *args, check=True) -> str:
        res = subprocess.run(args, env=self.env, capture_output=True, text=True, check=False)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {res.stderr}")
        return res.stdout

    def logs(self, tail: int = 30) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (an exited daemon is reaped if it is our child, else ignored)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python3 tests/slurm_cluster.py install")
    if missing_programs():
        install()
    print("SLURM test cluster programs present:", ", ".join(DAEMONS))
