"""``ctr cluster up|down|status|exec``: a Spark standalone master and worker and a team MLflow
tracking server on PostgreSQL, started from the project's own installation.

``up`` starts what is not running, in order (PostgreSQL, MLflow, master, worker), each as its
own process group with its log under ``<data root>/logs/cluster/``, waits until each answers,
and records each process (host, pid, start time: :mod:`shared.processes`) in
``<data root>/cluster/cluster.json``; ``down`` stops exactly those processes (never a reused
pid), ``status`` says which answer. ``exec ROLE`` runs one role in the foreground with the same
command line (a container's entry point: ``docker/compose.yml``).

Spark comes from the pyspark wheel (``bin/spark-class``: the wheel has no ``sbin`` scripts);
MLflow from this virtualenv, serving its artifacts itself (``--serve-artifacts``: clients
upload and download through it); PostgreSQL from Debian's package (its ``initdb`` and
``postgres``), run as the ``postgres`` user when this is root, since PostgreSQL refuses root.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from glob import glob
from hashlib import sha256
from pathlib import Path
from typing import Callable

from shared import processes
from shared.config import Settings
from shared.errors import CommandError
from shared.limits import read_tail

#: Roles in start order (stopped in reverse), and the role each needs answering before it starts.
ROLES = ("postgres", "mlflow", "master", "worker")
NEEDS = {"mlflow": "postgres", "worker": "master"}
DATABASE = "mlflow"
DB_USER = "ctr"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_BYTES = 4096


@dataclass(frozen=True)
class Cluster:
    """Where each role listens and keeps its files; stored in ``cluster.json`` by ``up`` so
    ``status``/``down`` and a later ``up`` find the same cluster."""

    home: str
    bind: str = "127.0.0.1"
    master_port: int = 7077
    master_ui_port: int = 8081
    worker_ui_port: int = 8082
    postgres_port: int = 5433
    mlflow_port: int = 5000
    worker_cores: int = 2
    worker_memory: str = "2g"
    master_url: str = ""  # a worker's master; "" = this cluster's
    postgres_uri: str = ""  # MLflow's backend store; "" = this cluster's PostgreSQL
    processes: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.home) / "cluster"

    @property
    def log_dir(self) -> Path:
        return Path(self.home) / "logs" / "cluster"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def spark_master(self) -> str:
        return self.master_url or f"spark://{self.bind}:{self.master_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.bind}:{self.mlflow_port}"

    @property
    def backend_uri(self) -> str:
        return self.postgres_uri or f"postgresql+psycopg2://{DB_USER}@{self.bind}:{self.postgres_port}/{DATABASE}"

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this cluster runs: no PostgreSQL of its own when given a backend store,
        no master of its own when its worker joins another one's."""
        return tuple(r for r in ROLES if not (r == "postgres" and self.postgres_uri)
                     and not (r == "master" and self.master_url))

    @property
    def postgres_data(self) -> Path:
        """PostgreSQL's data folder: under the data root, except as root, where PostgreSQL
        runs as the ``postgres`` user, who may not reach the data root: then in that user's home."""
        if os.geteuid() != 0:
            return self.root / "postgres"
        key = sha256(str(Path(self.home).resolve()).encode()).hexdigest()[:16]
        return Path(pwd.getpwnam("postgres").pw_dir) / "ctr-clusters" / key


def load(settings: Settings) -> Cluster | None:
    """The cluster recorded under this data root, or None."""
    path = settings.home / "cluster" / "cluster.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Cluster(**data)


def _save(cluster: Cluster) -> None:
    cluster.root.mkdir(parents=True, exist_ok=True)
    tmp = cluster.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(cluster), indent=2) + "\n")
    tmp.replace(cluster.state_file)


# -- command lines ---------------------------------------------------------------------

def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program (``initdb``, ``postgres``): on the PATH, else Debian's
    ``/usr/lib/postgresql/<major>/bin`` (not on the PATH there), the newest major first."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not candidates:
        raise CommandError(f"PostgreSQL's {name} was not found: install Debian's postgresql package "
                           "(apt-get install postgresql) or give --postgres-uri of an existing server")
    return candidates[-1]


def _as_postgres_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def command(cluster: Cluster, role: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``role``."""
    env = dict(os.environ)
    spark_class = str(_spark_home() / "bin" / "spark-class")
    env.update(SPARK_HOME=str(_spark_home()), SPARK_LOCAL_IP=cluster.bind if cluster.bind != "0.0.0.0" else "",
               PYSPARK_PYTHON=sys.executable)
    if not env["SPARK_LOCAL_IP"]:
        del env["SPARK_LOCAL_IP"]
    if role == "postgres":
        return _as_postgres_user([
            postgres_bin("postgres"), "-D", str(cluster.postgres_data), "-p", str(cluster.postgres_port),
            "-h", cluster.bind, "-c", "unix_socket_directories=", "-c", "max_connections=50",
        ]), env
    if role == "mlflow":
        # no GenAI job runners (huey consumers: six Python processes, ~1.5 GB): nothing here uses them
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        return [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", cluster.backend_uri,
            "--artifacts-destination", str(cluster.root / "mlflow-artifacts"), "--serve-artifacts",
            "--host", cluster.bind, "--port", str(cluster.mlflow_port), "--workers", "1",
            "--allowed-hosts", "*",
        ], env
    if role == "master":
        # no REST submission server: jobs are submitted by drivers, and it would take another port
        env["SPARK_MASTER_OPTS"] = (env.get("SPARK_MASTER_OPTS", "") + " -Dspark.master.rest.enabled=false").strip()
        return [spark_class, "org.apache.spark.deploy.master.Master", "--host", cluster.bind,
                "--port", str(cluster.master_port), "--webui-port", str(cluster.master_ui_port)], env
    if role == "worker":
        return [spark_class, "org.apache.spark.deploy.worker.Worker", cluster.spark_master,
                "--host", cluster.bind, "--cores", str(cluster.worker_cores), "--memory", cluster.worker_memory,
                "--webui-port", str(cluster.worker_ui_port), "--work-dir", str(cluster.root / "work")], env
    raise CommandError(f"unknown cluster role {role!r} (one of {', '.join(ROLES)})")


# -- preparing and probing each role --------------------------------------------------

def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CommandError(f"{what} failed ({' '.join(cmd[:6])} ...): {(done.stderr or done.stdout).strip()[-400:]}")


def prepare(cluster: Cluster, role: str) -> None:
    """What a role needs before it starts: PostgreSQL's data folder (``initdb``, trust
    authentication on the bind address only), MLflow's database and artifact folder."""
    if role == "postgres" and not (cluster.postgres_data / "PG_VERSION").exists():
        data = cluster.postgres_data
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for folder in (data.parent, data):
                shutil.chown(folder, "postgres", "postgres")
        _run(_as_postgres_user([postgres_bin("initdb"), "-D", str(data), "-A", "trust", "-U", DB_USER,
                                "-E", "UTF8", "--no-locale"]), "initdb")
    if role == "mlflow":
        (cluster.root / "mlflow-artifacts").mkdir(parents=True, exist_ok=True)
        _create_database(cluster.backend_uri)
    if role == "worker":
        (cluster.root / "work").mkdir(parents=True, exist_ok=True)


def _create_database(uri: str) -> None:
    """Create MLflow's database on its PostgreSQL server when it does not exist yet."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            conn = psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username,
                                    password=url.password, dbname="postgres", connect_timeout=5)
            break
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise CommandError(f"PostgreSQL at {url.host}:{url.port} does not answer: {exc}") from None
            time.sleep(0.5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{url.database}"')
    finally:
        conn.close()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host if host != "0.0.0.0" else "127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


def _local(cluster: Cluster) -> str:
    return cluster.bind if cluster.bind != "0.0.0.0" else "127.0.0.1"


def ready(cluster: Cluster, role: str) -> bool:
    """Whether ``role`` answers: PostgreSQL and the master take connections, MLflow's
    ``/health`` says OK, the master lists the worker as alive."""
    host = _local(cluster)
    try:
        if role == "postgres":
            return _port_open(host, cluster.postgres_port)
        if role == "mlflow":
            with urllib.request.urlopen(f"http://{host}:{cluster.mlflow_port}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        if role == "master":
            state = _get_json(f"http://{host}:{cluster.master_ui_port}/json/")
            return isinstance(state, dict) and state.get("status") == "ALIVE"
        if role == "worker":
            state = _get_json(f"http://{host}:{cluster.master_ui_port}/json/")
            workers = state.get("workers", []) if isinstance(state, dict) else []
            return any(w.get("state") == "ALIVE" and str(w.get("webuiaddress", "")).endswith(
                f":{cluster.worker_ui_port}") for w in workers)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return False


def alive(cluster: Cluster, role: str) -> bool:
    """Whether the process ``up`` recorded for ``role`` is still that process."""
    rec = cluster.processes.get(role)
    return rec is not None and processes.state(str(rec["host"]), str(rec["pid"]), str(rec["ticks"])) == processes.ALIVE


# -- up / down / status ----------------------------------------------------------------

def _start(cluster: Cluster, role: str) -> dict[str, object]:
    prepare(cluster, role)
    cmd, env = command(cluster, role)
    for folder in (cluster.root, cluster.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    log = cluster.log_dir / f"{role}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cluster.root, start_new_session=True)
    return {"host": processes.host_id(), "pid": proc.pid, "ticks": processes.start_ticks(proc.pid),
            "log": str(log), "command": cmd}


def _wait(cluster: Cluster, role: str, check: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not alive(cluster, role):
            raise CommandError(f"cluster {role} exited while starting; its log, "
                               f"{cluster.log_dir / (role + '.log')}, ends: {_tail(cluster, role)}")
        if time.monotonic() > deadline:
            raise CommandError(f"cluster {role} did not answer within {timeout:.0f} s; its log, "
                               f"{cluster.log_dir / (role + '.log')}, ends: {_tail(cluster, role)}")
        time.sleep(0.3)


def _tail(cluster: Cluster, role: str) -> str:
    path = cluster.log_dir / f"{role}.log"
    text = read_tail(path, LOG_TAIL_BYTES) if path.exists() else ""
    return " | ".join(text.strip().splitlines()[-5:])


def up(cluster: Cluster, echo: Callable[[str], None] = print) -> Cluster:
    """Start every role of ``cluster`` that is not running; returns the cluster as recorded.
    A role waits only for what it needs (MLflow for PostgreSQL, the worker for the master),
    so MLflow's start overlaps Spark's."""
    started: dict[str, float] = {}
    for role in cluster.roles:
        if alive(cluster, role) and ready(cluster, role):
            echo(f"  {role:<8} already running (pid {cluster.processes[role]['pid']})")
            continue
        if role != "worker" and ready(cluster, role):
            raise CommandError(f"cluster {role}: something else already answers on its port "
                               f"({_describe(cluster, role)}); choose another port")
        needed = NEEDS.get(role)
        if needed in started:
            _await(cluster, needed, started.pop(needed), echo)
        started[role] = time.perf_counter()
        cluster = replace(cluster, processes={**cluster.processes, role: _start(cluster, role)})
        _save(cluster)
    for role, t0 in started.items():
        _await(cluster, role, t0, echo)
    return cluster


def _await(cluster: Cluster, role: str, t0: float, echo: Callable[[str], None]) -> None:
    _wait(cluster, role, lambda: ready(cluster, role))
    echo(f"  {role:<8} started in {time.perf_counter() - t0:.1f} s (pid {cluster.processes[role]['pid']}): "
         f"{_describe(cluster, role)}")


def _stop_one(cluster: Cluster, role: str) -> bool:
    """Stop ``role``'s process group if its recorded process is still that process."""
    rec = cluster.processes.get(role)
    if not rec or not alive(cluster, role):
        return False
    pid = int(str(rec["pid"]))
    # PostgreSQL: SIGINT is its fast shutdown (SIGTERM would wait for every client to leave)
    sig = signal.SIGINT if role == "postgres" else signal.SIGTERM
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while alive(cluster, role) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(cluster, role):
        os.killpg(pid, signal.SIGKILL)
    # the group's other members (the MLflow server's workers, a worker's executors)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def down(cluster: Cluster, *, purge: bool = False, echo: Callable[[str], None] = print) -> Cluster:
    """Stop the recorded processes (reverse start order); ``purge`` also deletes the cluster's
    files (PostgreSQL's data, the MLflow artifacts, the worker's folder)."""
    for role in reversed(ROLES):
        if role in cluster.processes:
            echo(f"  {role:<8} {'stopped' if _stop_one(cluster, role) else 'was not running'}")
    cluster = replace(cluster, processes={})
    if purge:
        if cluster.postgres_data.exists() and not cluster.postgres_uri:
            shutil.rmtree(cluster.postgres_data)
        shutil.rmtree(cluster.root, ignore_errors=True)
    else:
        _save(cluster)
    return cluster


def _describe(cluster: Cluster, role: str) -> str:
    host = _local(cluster)
    return {
        "postgres": f"postgresql://{host}:{cluster.postgres_port}/{DATABASE} (data {cluster.postgres_data})",
        "mlflow": f"{cluster.mlflow_uri} (store {cluster.backend_uri}, artifacts {cluster.root / 'mlflow-artifacts'})",
        "master": f"{cluster.spark_master} (UI http://{host}:{cluster.master_ui_port})",
        "worker": f"{cluster.worker_cores} cores, {cluster.worker_memory} (UI http://{host}:{cluster.worker_ui_port})",
    }[role]


def status(cluster: Cluster) -> dict[str, str]:
    """Each role's state: ``running`` (its process is alive and it answers), ``not answering``
    (alive, silent) or ``stopped``."""
    out = {}
    for role in cluster.roles:
        if not alive(cluster, role):
            out[role] = "stopped"
        else:
            out[role] = "running" if ready(cluster, role) else "not answering"
    return out


# -- the subcommands ----------------------------------------------------------------------

def register(sub) -> None:
    """Add ``ctr cluster up|down|status|exec``."""
    p = sub.add_parser("cluster", help="start, stop or inspect a Spark standalone cluster and a team MLflow "
                                       "server on PostgreSQL")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up_p = actions.add_parser("up", help="start the roles that are not running and wait until they answer")
    exec_p = actions.add_parser("exec", help="run one role in the foreground (a container's entry point)")
    exec_p.add_argument("role", choices=ROLES)
    for q in (up_p, exec_p):
        q.add_argument("--bind", help="address every role listens on (default 127.0.0.1)")
        q.add_argument("--master-port", type=int, help="Spark master port (default 7077)")
        q.add_argument("--master-ui-port", type=int, help="Spark master web UI port (default 8081)")
        q.add_argument("--worker-ui-port", type=int, help="Spark worker web UI port (default 8082)")
        q.add_argument("--postgres-port", type=int, help="PostgreSQL port (default 5433)")
        q.add_argument("--mlflow-port", type=int, help="MLflow tracking server port (default 5000)")
        q.add_argument("--worker-cores", type=int, help="cores the worker offers (default 2)")
        q.add_argument("--worker-memory", help="memory the worker offers to executors (default 2g)")
        q.add_argument("--master-url", help="the worker joins this master instead of starting one")
        q.add_argument("--postgres-uri", help="MLflow's backend store on an existing PostgreSQL "
                                              "(postgresql+psycopg2://user:password@host:port/db) instead of starting one")
        q.set_defaults(func=run_up if q is up_p else run_exec)
    down_p = actions.add_parser("down", help="stop the processes 'up' started (by their recorded ids)")
    down_p.add_argument("--purge", action="store_true",
                        help="also delete the cluster's PostgreSQL data, MLflow artifacts and worker folder")
    down_p.set_defaults(func=run_down)
    st = actions.add_parser("status", help="which roles are running; exit status 3 when any is not")
    st.add_argument("--json", action="store_true", help="print as JSON")
    st.set_defaults(func=run_status)


OPTIONS = ("bind", "master_port", "master_ui_port", "worker_ui_port", "postgres_port", "mlflow_port",
           "worker_cores", "worker_memory", "master_url", "postgres_uri")


def _from_args(args, settings: Settings) -> Cluster:
    recorded = load(settings)
    base = recorded or Cluster(home=str(settings.home))
    given = {k: getattr(args, k) for k in OPTIONS if getattr(args, k, None) is not None}
    if recorded is not None and given and any(recorded.processes.get(r) and alive(recorded, r) for r in ROLES):
        changed = {k: v for k, v in given.items() if getattr(recorded, k) != v}
        if changed:
            raise CommandError(f"a cluster is running under {settings.home} with other settings "
                               f"({', '.join(changed)}); run 'ctr cluster down' first")
    return replace(base, home=str(settings.home), **given)


def run_up(args, settings: Settings) -> int:
    """``ctr cluster up``."""
    cluster = _from_args(args, settings)
    print(f"cluster under {cluster.root}, logs in {cluster.log_dir}")
    cluster = up(cluster)
    print(f"\npoint every command at it:\n  --spark-master {cluster.spark_master} --mlflow-uri {cluster.mlflow_uri}\n"
          f"  (or export CTR_SPARK_MASTER={cluster.spark_master} MLFLOW_TRACKING_URI={cluster.mlflow_uri})")
    return 0


def run_down(args, settings: Settings) -> int:
    """``ctr cluster down``."""
    cluster = load(settings)
    if cluster is None:
        print(f"no cluster recorded under {settings.home}")
        return 0
    down(cluster, purge=args.purge)
    return 0


def run_status(args, settings: Settings) -> int:
    """``ctr cluster status``."""
    cluster = load(settings)
    if cluster is None:
        raise CommandError(f"no cluster recorded under {settings.home}: start one with 'ctr cluster up'")
    states = status(cluster)
    if args.json:
        print(json.dumps({"spark_master": cluster.spark_master, "mlflow_uri": cluster.mlflow_uri,
                          "roles": {r: {"state": s, "pid": cluster.processes.get(r, {}).get("pid"),
                                        "log": cluster.processes.get(r, {}).get("log")}
                                    for r, s in states.items()}}, indent=2))
    else:
        for role, state in states.items():
            print(f"  {role:<8} {state:<14} {_describe(cluster, role)}")
    return 0 if all(s == "running" for s in states.values()) else 3


def run_exec(args, settings: Settings) -> int:
    """``ctr cluster exec ROLE``: prepare the role, then replace this process by it."""
    cluster = _from_args(args, settings)
    prepare(cluster, args.role)
    cmd, env = command(cluster, args.role)
    sys.stdout.flush()
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached: exec replaced this process
