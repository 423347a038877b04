"""A real two-node SLURM for the tests: munged, slurmctld and two slurmd, each slurmd in its own network and UTS
namespace on a private bridge, so a `--nodes 2` job spans two hosts and its rendezvous crosses an interface
(design note §5). Everything lives under one fixed directory so that a leftover of an earlier, killed session is
found and cleaned before the next start. Needs root, Debian's slurm-wlm and munge, and `ip`/`nsenter`/`unshare`.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path("/tmp/mythos-slurm-test")  # fixed, so a leftover can be found; only these tests run SLURM here
LAST_LOGS = Path("/tmp/mythos-slurm-test-logs")
BRIDGE = "mythosbr0"
SUBNET = "10.99.0"
NODES = ("node1", "node2")
CTLD_PORT = 16817
SLURMD_PORT = 16818
# A requeued job waits cred_expire + 1 s before it may start again, so that the nodes' revocation of its previous
# credential has expired: started sooner (as an earlier `scontrol update StartTime=now` did), the new launch can reach
# a node before that node has processed the old instance's termination, is refused ("Job credential revoked") and the
# job ends FAILED. 5 s (SLURM's default is 120) keeps requeue tests quick and the safety SLURM relies on.
CRED_EXPIRE_S = 5
CPUS_PER_NODE = 4  # more than the machine has: lets the SLURM tests run jobs side by side
TOOLS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue", "ip", "nsenter", "unshare", "runuser")


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster (one line), or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "SLURM tests need root (they start munged, slurmctld and two slurmd in network namespaces)"
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        return f"SLURM tests need {', '.join(missing)} (apt-get install slurm-wlm munge iproute2)"
    return None


def _run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def _kill_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().split()[0])
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError, IndexError):
        return
    if any(name in exe for name in ("slurm", "munge")):  # never kill an unrelated process that reused the pid
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def _stray_steps() -> list[int]:
    """Job-step daemons (slurmstepd) and every process under them: what a killed slurmd can leave behind."""
    parent, steps = {}, []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if os.readlink(d / "exe") == "/usr/sbin/slurmstepd":
                steps.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], list(steps)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [c for c, p in parent.items() if p == pid]
    return out


class SlurmCluster:
    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._procs: list[subprocess.Popen] = []

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Stop whatever an earlier run left (daemons by their pid files, namespaces, bridge, the directory)."""
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        for pidfile in sorted(self.root.glob("**/*.pid")):
            _kill_pidfile(pidfile)
        for p in self._procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self._procs.clear()
        for pid in _stray_steps():  # only these tests run SLURM on this machine (see the module docstring)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for node in NODES:
            _run("ip", "netns", "del", f"mythos-{node}", check=False)
            _run("ip", "link", "del", f"mv{node}", check=False)
        _run("ip", "link", "del", BRIDGE, check=False)
        if (self.root / "log").is_dir():  # the last cluster's logs outlive it, for a post-mortem
            shutil.rmtree(LAST_LOGS, ignore_errors=True)
            shutil.copytree(self.root / "log", LAST_LOGS, dirs_exist_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def start(self) -> "SlurmCluster":
        self.cleanup()
        os.environ["SLURM_CONF"] = str(self.conf)  # sbatch/squeue/scontrol of this process and its children
        for d in ("state", "log", "spool/node1", "spool/node2", "jobs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._network()
        self._munge()
        self._write_conf()
        ctld = subprocess.Popen(["slurmctld", "-D", "-f", str(self.conf)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=open(self.root / "log/ctld.err", "w"))
        self._procs.append(ctld)
        hosts = self.root / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{SUBNET}.1 {self.ctld_host}\n" +
                         "".join(f"{SUBNET}.{11 + i} {n}\n" for i, n in enumerate(NODES)))
        for node in NODES:
            # `ip netns exec` would remount /sys and slurmd 22.05 dies; nsenter + unshare keeps it (design note §5)
            inner = f"hostname {node} && mount --bind {hosts} /etc/hosts && exec slurmd -D -f {self.conf} -N {node}"
            p = subprocess.Popen(["nsenter", f"--net=/run/netns/mythos-{node}", "unshare", "--uts", "--mount",
                                  "--propagation", "private", "sh", "-c", inner], env=self.env,
                                 stdout=subprocess.DEVNULL, stderr=open(self.root / f"log/{node}.err", "w"))
            self._procs.append(p)
        self._wait_nodes_idle(timeout=60)
        return self

    def stop(self) -> None:
        _run("scancel", "--full", "--user=root", check=False)
        deadline = time.monotonic() + 20
        while self.queue() and time.monotonic() < deadline:  # let the steps end before their daemons go
            time.sleep(0.2)
        self.cleanup()
        os.environ.pop("SLURM_CONF", None)

    def _network(self) -> None:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for i, node in enumerate(NODES):
            ns = f"mythos-{node}"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", f"mv{node}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", f"mv{node}", "master", BRIDGE, "up")
            _run("ip", "-n", ns, "addr", "add", f"{SUBNET}.{11 + i}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")

    def _munge(self) -> None:
        d = self.root / "munge"
        d.mkdir(mode=0o755)
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        shutil.chown(d, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        self.munge_socket = d / "munge.socket"
        _run("runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--socket={self.munge_socket}",
             f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}", f"--seed-file={d / 'seed'}",
             f"--key-file={key}")

    @property
    def ctld_host(self) -> str:
        return os.uname().nodename.split(".")[0]

    def _write_conf(self) -> None:
        r = self.root
        nodes = "".join(f"NodeName={n} NodeAddr={SUBNET}.{11 + i} NodeHostname={n} CPUs={CPUS_PER_NODE} "
                        f"RealMemory=4000 State=UNKNOWN\n" for i, n in enumerate(NODES))
        self.conf.write_text(f"""ClusterName=mythostest
SlurmctldHost={self.ctld_host}({SUBNET}.1)
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE_S}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmdParameters=config_overrides
JobRequeue=1
KillWait=10
SlurmctldDebug=debug
SlurmdDebug=debug
MinJobAge=600
SchedulerParameters=sched_interval=1
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.%n.log
{nodes}PartitionName=debug Nodes={','.join(NODES)} Default=YES State=UP MaxTime=INFINITE
""")

    def _wait_nodes_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            r = _run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
            out = r.stdout + r.stderr
            states = dict(line.split() for line in r.stdout.splitlines() if len(line.split()) == 2)
            if all(states.get(n) == "idle" for n in NODES):
                return
            time.sleep(0.2)
        raise RuntimeError(f"SLURM nodes not idle after {timeout} s: {out.strip()!r}; see {self.root / 'log'}")

    # ---- job helpers --------------------------------------------------------------------------------------------
    def sbatch(self, *args: str, cwd: Path | None = None, env: dict | None = None) -> str:
        r = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=60,
                           env={**self.env, **(env or {})}, cwd=cwd)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch failed: {r.stderr.strip()}")
        return r.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, Reason, ...); {} when unknown."""
        r = _run("scontrol", "show", "job", "-o", job_id, check=False)
        return dict(re.findall(r"(\w+)=(\S*)", r.stdout))

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        info: dict = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.25)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout} s: {info}")

    def wait_done(self, job_id: str, timeout: float = 240) -> dict:
        return self.wait_state(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                                        "BOOT_FAIL", "DEADLINE"), timeout)

    def diagnose(self, job_id: str) -> str:
        """What slurmctld and the slurmds logged about a job: appended to a failed assertion's message."""
        pat = re.compile(rf"JobId={job_id}\b|job[ _]?{job_id}\b|StepId={job_id}\.", re.I)
        lines = [f"--- scontrol show job: {self.job(job_id)}"]
        for log in sorted((self.root / "log").glob("*.log")):
            try:
                lines += [f"{log.name}: {ln}" for ln in log.read_text(errors="replace").splitlines() if pat.search(ln)]
            except OSError:
                continue
        return "\n" + "\n".join(lines[-80:])

    def queue(self) -> list[str]:
        """Job ids currently pending or running."""
        return _run("squeue", "-h", "-o", "%i", check=False).stdout.split()

    def scontrol(self, *args: str) -> subprocess.CompletedProcess:
        return _run("scontrol", *args, check=False)

    def scancel(self, *args: str) -> subprocess.CompletedProcess:
        return _run("scancel", *args, check=False)
