"""The fault and load suite: the real service under faults, measured from outside.

It starts `detection-pipeline up` on a fresh home (SQLite, and PostgreSQL on a cluster of its
own: `initdb`/`pg_ctl` on a free port, so the machine's server is never touched), trains the
tiny model through the queue, then plays a seeded plan: in each scenario runs are submitted
(through the CLI and through GraphQL) while faults are injected at chosen moments, and the
scenario ends when the queue has drained. It sees the product as a user does: the CLI, the
webserver's GraphQL, the database (records and Dagster's runs and logs, read only) and the
processes in /proc. Each scenario gives one row:

- submitted: runs accepted (a record id from the CLI, a Dagster run id from GraphQL);
- faults: faults injected (a planned kill whose target had already gone is not counted);
- lost: accepted runs without a record, or whose record is not final when the queue drained;
- duplicated: Dagster runs (attempts) whose MMDetection work was started more than once, and
  records sharing one idempotency key or one Dagster run;
- stuck: records still waiting or processing when the scenario's time was up (the queue's work
  plus one sensor interval and the recovery time per fault);
- orphans: run workers and MMDetection children alive once every run has ended (the warm
  worker's one idle spare excepted);
- outside touched: files of the data folder and the models changed, added or removed;
- recovery median/max: per fault, seconds from the fault to the next run that succeeded.

    python bench/faults.py                    # every scenario, SQLite and PostgreSQL
    python bench/faults.py --smoke            # a short plan on SQLite (what the tests run)
    python bench/faults.py --seed 7 --storage sqlite --scenario kill-child kill-daemon

The same seed gives the same plan (which runs, which channel, which fault when). Results go to
bench/results/faults_*.json and, with --markdown FILE, a table for the docs.
"""

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa
import yaml
from figures import commit  # bench/figures.py
from processes import descendants, processes, read_proc  # bench/processes.py
from sqlalchemy.pool import NullPool

CLI = str(Path(sys.executable).with_name("detection-pipeline"))
RESULTS_DIR = Path(__file__).parent / "results"
RETRY_DELAY_SECONDS = 1  # the queues' first retry delay in the test home (product: 120 s)
SENSOR_INTERVAL_SECONDS = 5  # the upkeep sensor's, and run monitoring's poll
UP_START_TIMEOUT_SECONDS = 120
IMAGES_PER_RUN = 16  # 128 px each: MMDetection works ~0.2 s
CLI_SHARE = 0.2
SUBMITTERS = 4
SUBMISSION_TRIES = 3
SUBMISSION_RETRY_SECONDS = 3
RUN_SECONDS = 6
# The home's limit on a run's MMDetection work (product default: 6 h): a hung child is ended
# after it. Above what training the tiny model takes on a slow machine.
TIMEOUT_SECONDS = 45  # what one tiny run may take, gap included, on a busy 2-core machine
CHILD_STARTED = re.compile(r"MMDetection \w+ started.*\(pid (\d+)\)")
SPARE_FORKED = re.compile(r"spare (\d+) forked")
LOCATION = "detection_pipeline.definitions"

# Processes and waiting.


def _kill(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable, timeout: float, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(poll)
    return None


# Storage.


class PostgresCluster:
    """A PostgreSQL cluster of the suite's own (initdb, pg_ctl) on a free port, to restart and
    stop at will; run as the `postgres` user when this is root (initdb refuses root)."""

    def __init__(self, folder: Path):
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        self.bin = binaries[-1] if binaries else Path(shutil.which("pg_ctl") or "pg_ctl").parent
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        folder.mkdir(parents=True)
        if self.as_user:
            shutil.chown(folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / program), *args],
            check=True,
            capture_output=True,
            cwd=self.folder,
        )

    def pg_ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", action, "-D", str(self.data), "-w", "-m", "fast", "-o", options,
            "-l", str(self.folder / "server.log"),
        )  # fmt: skip

    def start(self) -> None:
        self.pg_ctl("start")

    def stop(self) -> None:
        self.pg_ctl("stop")


# The service, as a user runs it.


@dataclasses.dataclass
class Submission:
    channel: str  # cli or graphql
    record_id: int | None = None
    dagster_run_id: str | None = None
    # What the user was shown when it was refused; a Python traceback there is a crash.
    refusal: str = ""

    @property
    def accepted(self) -> bool:
        return bool(self.record_id or self.dagster_run_id)

    @property
    def crashed(self) -> bool:
        return "Traceback (most recent call last)" in self.refusal


class Service:
    """A fresh home with `up` running on it; what the suite reads of it."""

    def __init__(self, root: Path, postgres_url: str | None):
        self.home = root / "home"
        self.log = root / "up.log"
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home)}
        init = [CLI, "init", *(["--postgres", postgres_url] if postgres_url else [])]
        subprocess.run(init, env=self.env, check=True, capture_output=True)
        settings_file = self.home / "detection_pipeline.yaml"
        settings = yaml.safe_load(settings_file.read_text())
        retry = {"attempts": 3, "delay_seconds": RETRY_DELAY_SECONDS, "backoff_factor": 2}
        settings["queues"] = {
            "detection": {"priority": 10, "retry": retry},
            "default": {"priority": 0, "retry": retry},
        }
        settings["timeout_seconds"] = TIMEOUT_SECONDS
        settings_file.write_text(yaml.safe_dump(settings))
        self.records_url = postgres_url or f"sqlite:///{self.home / 'records.db'}"
        self.engine = sa.create_engine(self.records_url, poolclass=NullPool)
        self.port = free_port()
        self.up: subprocess.Popen | None = None
        self._instance = None

    # up

    def start(self) -> None:
        self.up = subprocess.Popen(
            [CLI, "up", "--port", str(self.port)],
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_for(self.answers, UP_START_TIMEOUT_SECONDS, poll=0.5):
            raise RuntimeError(f"`detection-pipeline up` did not answer; see {self.log}")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.up and self.up.poll() is None:
            os.killpg(self.up.pid, signal.SIGINT)
            try:
                self.up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.up.pid, signal.SIGKILL)
        self.engine.dispose()
        if self._instance:
            self._instance.dispose()

    @property
    def instance(self):
        if self._instance is None:
            from dagster import DagsterInstance

            self._instance = DagsterInstance.from_config(str(self.home))
        return self._instance

    # Submitting

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def submit_cli(self, images: Path) -> Submission:
        done = self.cli("detect", "--images", str(images), "--model", "tiny", "--json")
        if done.returncode != 0:
            return Submission("cli", refusal=done.stdout + done.stderr)
        return Submission("cli", record_id=json.loads(done.stdout)["id"])

    def submit_graphql(self, images: Path) -> Submission:
        from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

        config = {"ops": {"prepare_inputs": {"config": {"images": [str(images)], "model": "tiny"}}}}
        client = DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=30)
        try:
            run_id = client.submit_job_execution(
                "detect",
                repository_location_name=LOCATION,  # saves a query for it
                repository_name="__repository__",
                run_config=config,
            )
        except (DagsterGraphQLClientError, OSError) as error:
            said = ": ".join(str(arg) for arg in error.args)
            return Submission("graphql", refusal=f"{type(error).__name__}: {said}")
        return Submission("graphql", dagster_run_id=run_id)

    # Reading

    def records(self) -> list[dict]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM dp_run_records")).mappings()
            records = [dict(row) for row in rows]
        for record in records:
            if isinstance(record["dagster_run_ids"], str):
                record["dagster_run_ids"] = json.loads(record["dagster_run_ids"])
            record["dagster_run_ids"] = record["dagster_run_ids"] or []
        return records

    def mmdet_starts(self, run_id: str) -> list[int]:
        """The pids of the MMDetection children the run's log says it started."""
        return [
            int(found[1])
            for event in self.instance.all_logs(run_id)
            if (found := CHILD_STARTED.search(event.user_message or ""))
        ]

    def run_worker(self, run_id: str) -> int | None:
        from detection_pipeline.run_worker import reported_worker

        run = self.instance.get_run_by_id(run_id)
        worker = run and reported_worker(run_id, run.tags)
        return worker["pid"] if worker else None


# Snapshots of the files runs must not touch.


def tree_hashes(*folders: Path) -> dict[str, str]:
    hashes = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def changed_files(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(before.get(path) != after.get(path) for path in before.keys() | after.keys())


# Fault targets: the pid to kill now, or None.


def _service_process(service: Service, module: str) -> int | None:
    table = processes()
    pids = [pid for pid in descendants(service.up.pid, table) if module in table[pid][1]]
    return pids[0] if pids else None


def _fork_server(runtime: str, module: str) -> int | None:
    """The fork server of `module` (not one of its forked children) in this runtime folder."""
    table = processes()
    servers = [
        pid
        for pid, (ppid, command) in table.items()
        if module in command and runtime in command and module not in table.get(ppid, (0, ""))[1]
    ]
    return servers[0] if servers else None


@dataclasses.dataclass
class Fault:
    """What `inject(scenario, processing record, delay)` does while a run works; True if it
    happened (a kill whose target had already gone did not). `delays`: the range the delay is
    drawn from, seconds from the moment a run starts processing (a child: once started)."""

    name: str
    inject: Callable[["Scenario", dict, float], bool]
    delays: tuple[float, float] = (0.2, 1.5)
    storages: tuple[str, ...] = ("sqlite", "postgres")
    # Seconds the fault itself lasts, beyond its recovery (an outage): added to the drain.
    lasts: float = 0
    times: int | None = None  # in a scenario; default: one per 8 runs
    # What the scenario needs around it (a small disk): a context manager of the scenario.
    around: Callable[["Scenario"], contextlib.AbstractContextManager] | None = None


def kill(target: Callable[["Scenario", dict], int | None], restarts_up: bool = False):
    """kill -9 of the target's pid; the suite then starts `up` again, as a user would."""

    def inject(scenario: "Scenario", record: dict, delay: float) -> bool:
        pid = target(scenario, record)
        time.sleep(delay)
        if not (pid and _kill(pid)):
            return False
        if restarts_up:
            scenario.service.up.wait()
            time.sleep(1)  # the user notices, and types it again
            scenario.service.start()
        return True

    return inject


def _child(scenario: "Scenario", record: dict) -> int | None:
    run_id = record["dagster_run_ids"][-1]
    pids = wait_for(lambda: scenario.service.mmdet_starts(run_id), timeout=RUN_SECONDS)
    return pids[-1] if pids else None


# Holds a write transaction on each SQLite file given, until stdin closes.
SQLITE_LOCKER = """
import sqlite3, sys
connections = [sqlite3.connect(path, isolation_level=None) for path in sys.argv[1:]]
for connection in connections:
    connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""
SQLITE_LOCK_SECONDS = 10


def hold_sqlite_locks(scenario: "Scenario", record: dict, delay: float) -> bool:
    """Another process holds the write lock of every database of the home for 10 s, while the
    run finishes and more runs are submitted through the CLI."""
    home = scenario.service.home
    databases = [home / "records.db", *sorted((home / "storage").glob("*.db"))]
    time.sleep(delay)
    locker = subprocess.Popen(
        [sys.executable, "-c", SQLITE_LOCKER, *map(str, databases)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if locker.stdout.readline().strip() != "locked":
        raise RuntimeError("the SQLite locker could not take its locks")
    submitting = threading.Thread(target=scenario.submit, args=(["cli"] * 3,))
    submitting.start()
    time.sleep(SQLITE_LOCK_SECONDS)
    locker.communicate("")
    submitting.join()
    return True


def postgres_restart(scenario: "Scenario", record: dict, delay: float) -> bool:
    time.sleep(delay)
    scenario.service.cluster.pg_ctl("restart")
    return True


POSTGRES_OUTAGE_SECONDS = 30


def postgres_outage(scenario: "Scenario", record: dict, delay: float) -> bool:
    """The server down for 30 s, runs submitted through the CLI meanwhile (refused: said so)."""
    time.sleep(delay)
    scenario.service.cluster.stop()
    scenario.submit(["cli"])
    time.sleep(POSTGRES_OUTAGE_SECONDS)
    scenario.service.cluster.start()
    return True


def hang_child(scenario: "Scenario", record: dict, delay: float) -> bool:
    """SIGSTOP of the run's MMDetection child: the run's timeout (TIMEOUT_SECONDS) ends it."""
    pid = _child(scenario, record)
    time.sleep(delay)
    return bool(pid and _kill(pid, signal.SIGSTOP))


CHILD_MEMORY_LIMIT = 1 << 20  # bytes it may take beyond what it has


def limit_child_memory(scenario: "Scenario", record: dict, delay: float) -> bool:
    """The run's MMDetection child may take little more memory: a memory cgroup (v1) where this
    may make one (the kernel's OOM killer ends it), else its address space (RLIMIT_AS: its
    allocations fail)."""
    pid = _child(scenario, record)
    time.sleep(delay)
    if not pid:
        return False
    cgroup = Path("/sys/fs/cgroup/memory") / f"faults_{pid}"
    try:
        cgroup.mkdir()
        (cgroup / "memory.limit_in_bytes").write_text(str(CHILD_MEMORY_LIMIT))
        (cgroup / "cgroup.procs").write_text(str(pid))
    except OSError:
        with contextlib.suppress(OSError):
            cgroup.rmdir()
        size = next(
            int(line.split()[1]) * 1024
            for line in read_proc(pid, "status").splitlines() + ["VmSize: 0 kB"]
            if line.startswith("VmSize:")
        )
        try:
            resource.prlimit(pid, resource.RLIMIT_AS, (size + CHILD_MEMORY_LIMIT,) * 2)
        except (ProcessLookupError, ValueError):
            return False
        return True
    wait_for(lambda: not read_proc(pid, "stat"), timeout=60)
    # Counted only if the kernel did kill it: a child that needed no more memory met no fault.
    killed = "oom_kill 0" not in (cgroup / "memory.oom_control").read_text()
    with contextlib.suppress(OSError):
        cgroup.rmdir()
    return killed


DISK_FULL_SECONDS = 15
RUNS_DISK_BYTES = 256 << 20


@contextlib.contextmanager
def small_runs_disk(scenario: "Scenario") -> Iterator[None]:
    """The home's runs folder on a tmpfs of its own (256 MB) for the scenario."""
    runs = scenario.service.home / "runs"
    runs.mkdir(exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={RUNS_DISK_BYTES}", "tmpfs", str(runs)]
    done = subprocess.run(mount, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Skipped(f"mounting a tmpfs needs root: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(runs)], check=False)


def fill_runs_disk(scenario: "Scenario", record: dict, delay: float) -> bool:
    """The runs folder's disk full for 15 s (a file takes what is left), then freed."""
    time.sleep(delay)
    filler = scenario.service.home / "runs" / "filler"
    with filler.open("wb", buffering=0) as file, contextlib.suppress(OSError):  # ENOSPC
        while True:
            file.write(bytes(1 << 20))
    scenario.disk_full = str(filler.parent)
    time.sleep(DISK_FULL_SECONDS)
    # What the runs that met it said, before their retries (after the space is freed) succeed.
    scenario.errors_seen |= {record["error"] for record in scenario.ours() if record["error"]}
    filler.unlink()
    return True


class Skipped(Exception):
    """A scenario this machine cannot play (said in its row)."""


FAULTS = {
    fault.name: fault
    for fault in (
        Fault("kill-child", kill(_child), delays=(0.0, 0.15)),
        Fault(
            "kill-run-worker",
            kill(lambda s, record: s.service.run_worker(record["dagster_run_ids"][-1])),
            delays=(0.05, 0.5),  # a run takes 0.6-2.5 s
        ),
        Fault("kill-warm-worker", kill(lambda s, _: _fork_server(s.runtime, "warm_worker"))),
        Fault("kill-daemon", kill(lambda s, _: _service_process(s.service, "instance.daemon"))),
        Fault(
            "kill-webserver",
            kill(lambda s, _: _service_process(s.service, "instance.webserver")),
        ),
        Fault(
            "kill-code-server",
            kill(lambda s, _: _service_process(s.service, "dagster api grpc")),
        ),
        Fault("kill-up", kill(lambda s, _: s.service.up.pid, restarts_up=True)),
        Fault(
            "sqlite-busy",
            hold_sqlite_locks,
            storages=("sqlite",),
            lasts=SQLITE_LOCK_SECONDS,
            times=2,
        ),
        Fault("postgres-restart", postgres_restart, storages=("postgres",), times=2),
        # The child lives ~0.2 s: some of the planned moments find it gone.
        Fault("hang-child", hang_child, delays=(0.0, 0.05), times=2, lasts=TIMEOUT_SECONDS),
        Fault("memory-limit", limit_child_memory, delays=(0.0, 0.05), times=3),
        Fault(
            "disk-full",
            fill_runs_disk,
            times=1,
            lasts=DISK_FULL_SECONDS,
            around=small_runs_disk,
        ),
        Fault(
            "postgres-outage",
            postgres_outage,
            storages=("postgres",),
            lasts=POSTGRES_OUTAGE_SECONDS,
            times=1,
        ),
    )
}


# A scenario.

ALL_STARTED = {"id": None}


@dataclasses.dataclass
class Row:
    scenario: str
    storage: str
    submitted: int = 0
    faults: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    orphans: int = 0
    outside_touched: int = 0
    refused: int = 0
    crashed: int = 0
    recovery_median_s: float | None = None
    recovery_max_s: float | None = None
    succeeded: int = 0
    failed: int = 0
    unclear_errors: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)


class Scenario:
    """Runs submitted while `inject` does its faults; then the drain and the row."""

    def __init__(self, name: str, storage: str, service: Service, runtime: str, images: Path):
        self.name = name
        self.service = service
        self.runtime = runtime
        self.images = images
        self.row = Row(name, storage)
        self.submissions: list[Submission] = []
        self.fault_times: list[float] = []
        self.disk_full = ""  # the runs folder, once its disk was full
        self.errors_seen: set[str] = set()  # errors of attempts that were retried since
        self.submitting: threading.Thread | None = None  # the plan's submissions
        self._known_ids = {record["id"] for record in service.records()}
        self._protected = (service.home / "data", service.home / "models")
        self._before = tree_hashes(*self._protected)

    def submit(self, plan: list[str]) -> None:
        """Submits one run per channel in `plan` (cli or graphql), a few at a time: the queue
        gets ahead of its single run. A refused submission is tried again a few seconds later,
        as a user or a careful client would; every refusal is kept."""

        def one(channel: str) -> list[Submission]:
            tries = []
            for _ in range(SUBMISSION_TRIES):
                if channel == "cli":
                    tries.append(self.service.submit_cli(self.images))
                else:
                    tries.append(self.service.submit_graphql(self.images))
                if tries[-1].accepted:
                    break
                time.sleep(SUBMISSION_RETRY_SECONDS)
            return tries

        with concurrent.futures.ThreadPoolExecutor(SUBMITTERS) as pool:
            self.submissions += [s for tries in pool.map(one, plan) for s in tries]

    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.accepted]

    def ours(self) -> list[dict]:
        return [r for r in self.service.records() if r["id"] not in self._known_ids]

    def processing(self, seen: set[int]) -> dict | None:
        """A processing record not in `seen`, with its Dagster run; ALL_STARTED when there
        will be none (everything submitted is in `seen`: fewer runs were accepted than
        planned)."""
        records = self.ours()
        for record in records:
            if (
                record["status"] == "processing"
                and record["id"] not in seen
                and record["dagster_run_ids"]
            ):
                return record
        if not self.submitting.is_alive() and len(seen) >= len(self.accepted()):
            return ALL_STARTED
        return None

    def inject(self, fault: Fault, at_runs: list[int], delays: list[float]) -> None:
        """Injects the fault while the at_runs-th runs (in the order they start) work."""
        seen: set[int] = set()
        for ordinal, delay in zip(at_runs, delays, strict=True):
            while len(seen) < ordinal:
                record = wait_for(lambda s=seen: self.processing(s), timeout=120, poll=0.05)
                if record is None or record == ALL_STARTED:
                    if record is None:
                        self.row.notes.append(f"no run started within 120 s (run {len(seen) + 1})")
                    return
                seen.add(record["id"])
            started = time.time()
            if fault.inject(self, record, delay):
                self.fault_times.append(started + delay)

    def drain(self, allowance: float) -> None:
        """Waits until every accepted run's record has ended, or `allowance` seconds."""

        def drained() -> bool:
            records = self.ours()
            by_run = {run_id for record in records for run_id in record["dagster_run_ids"]}
            return all(
                s.dagster_run_id in by_run for s in self.accepted() if s.dagster_run_id
            ) and all(ended(record) for record in records)

        if not wait_for(drained, allowance, poll=0.5):
            self.row.notes.append(f"not drained within {allowance:.0f} s")

    def measure(self) -> Row:
        row, service = self.row, self.service
        records = self.ours()
        by_id = {record["id"]: record for record in records}
        owners: dict[str, list[int]] = {}
        for record in records:
            for run_id in record["dagster_run_ids"]:
                owners.setdefault(run_id, []).append(record["id"])
        accepted = self.accepted()
        row.submitted = len(accepted)
        refused = [s for s in self.submissions if not s.accepted]
        row.refused = len(refused)
        row.crashed = sum(s.crashed for s in refused)
        row.notes += sorted(
            {(s.refusal.strip() or "refused").splitlines()[-1][:200] for s in refused}
        )
        row.faults = len(self.fault_times)
        for submission in accepted:
            if submission.record_id:
                record = by_id.get(submission.record_id)
            else:
                [record_id, *_] = owners.get(submission.dagster_run_id, [None])
                record = by_id.get(record_id)
            if record is None or not ended(record):
                row.lost += 1
        row.stuck = sum(not ended(record) for record in records)
        row.duplicated = sum(len(ids) > 1 for ids in owners.values())
        keys = [record["idempotency_key"] for record in records if record["idempotency_key"]]
        row.duplicated += len(keys) - len(set(keys))
        for run_id in owners:
            if len(service.mmdet_starts(run_id)) > 1:
                row.duplicated += 1
                row.notes.append(f"Dagster run {run_id} started MMDetection twice")
        row.succeeded = sum(record["status"] == "success" for record in records)
        row.failed = sum(record["status"] == "error" for record in records)
        for record in records:
            if record["status"] == "error":
                row.notes.append(f"record {record['id']} ended error: {record['error']}")
        errors = self.errors_seen | {r["error"] or "" for r in records if r["status"] == "error"}
        for error in sorted(errors):
            if not clear_error(error, self.disk_full):
                row.unclear_errors += 1
                row.notes.append(f"unclear error: {error}")
        time.sleep(2)  # a run worker reports its end before it exits
        row.orphans = len(orphans(self.runtime))
        row.outside_touched = changed_files(self._before, tree_hashes(*self._protected))
        successes = sorted(
            utc_timestamp(record["finished_at"])
            for record in records
            if record["status"] == "success"
        )
        recoveries = [
            next((end - fault for end in successes if end > fault), None)
            for fault in self.fault_times
        ]
        if None in recoveries:
            row.notes.append("no run succeeded after a fault")
        recoveries = [r for r in recoveries if r is not None]
        if recoveries:
            row.recovery_median_s = round(statistics.median(recoveries), 2)
            row.recovery_max_s = round(max(recoveries), 2)
        return row


def clear_error(error: str, full_folder: str) -> bool:
    """Whether a record's error says what went wrong without a traceback; on a full disk, it
    must name the folder."""
    if "Traceback (most recent call last)" in error or not error.strip():
        return False
    return not full_folder or (full_folder in error and "No space left" in error)


def ended(record: dict) -> bool:
    """Final, and no retry to come (a failed run's record says error until the upkeep sensor
    has decided on its retry)."""
    return record["status"] in ("success", "error", "cancelled") and not record["retry_pending"]


def utc_timestamp(value: dt.datetime | str) -> float:
    """A record's time as SQLite (text, UTC without a zone) or PostgreSQL gives it."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def orphans(runtime: str) -> list[int]:
    """Run workers and MMDetection children alive (every run has ended): children of the run
    worker servers, Dagster's own run workers, MMDetection Pythons and the warm worker's forks
    but its idle spare."""
    table = processes()
    spares = set()
    for log in Path(runtime).glob("*.log"):
        if found := SPARE_FORKED.findall(log.read_text(errors="replace")):
            spares.add(int(found[-1]))
    found = []
    for pid, (ppid, command) in table.items():
        parent = table.get(ppid, (0, ""))[1]
        forked_by_server = ("run_worker_server" in parent or "warm_worker" in parent) and (
            runtime in parent
        )
        own_python = "detection_pipeline.mmdet_runner " in command + " " or (
            "dagster api execute_run" in command
        )
        if (forked_by_server and pid not in spares) or own_python:
            found.append(pid)
    return found


# The plan.


def play(
    service: Service, storage: str, runtime: str, images: Path, fault: Fault, seed: int, runs: int
) -> Row:
    """`runs` runs submitted (a fifth through the CLI, the rest through GraphQL: a CLI call
    costs a second or two of CPU beside the runs) while the fault happens at random moments."""
    rng = random.Random(f"{seed}-{storage}-{fault.name}")
    times = fault.times or max(1, runs // 8)
    at_runs = sorted(rng.sample(range(2, runs), times))
    delays = [round(rng.uniform(*fault.delays), 2) for _ in at_runs]
    channels = ["cli" if rng.random() < CLI_SHARE else "graphql" for _ in range(runs)]
    scenario = Scenario(fault.name, storage, service, runtime, images)
    try:
        with fault.around(scenario) if fault.around else contextlib.nullcontext():
            scenario.submitting = threading.Thread(target=scenario.submit, args=(channels,))
            scenario.submitting.start()
            scenario.inject(fault, at_runs, delays)
            scenario.submitting.join()
            recovery = 3 * SENSOR_INTERVAL_SECONDS + UP_START_TIMEOUT_SECONDS / 4 + fault.lasts
            scenario.drain(runs * RUN_SECONDS + times * recovery)
            return scenario.measure()
    except Skipped as skipped:
        scenario.row.notes.append(f"skipped: {skipped}")
        return scenario.row


def train_tiny_model(service: Service, data: Path) -> None:
    from detection_pipeline.datasets.synthetic import make_dataset

    make_dataset(data / "train", images=16, seed=0)
    done = service.cli(
        "train",
        "--dataset",
        str(data / "train"),
        "--name",
        "tiny",
        "--epochs",
        "2",
        "--wait",
        "--json",
    )
    if done.returncode != 0:
        raise RuntimeError(f"training the tiny model failed: {done.stdout}{done.stderr}")


@contextlib.contextmanager
def storage_service(storage: str, root: Path) -> Iterator[Service]:
    with contextlib.ExitStack() as stack:
        url = None
        cluster = None
        if storage == "postgres":
            cluster = PostgresCluster(root / "postgres")
            stack.callback(cluster.stop)
            url = cluster.url
        service = Service(root, url)
        service.cluster = cluster
        stack.callback(service.stop)
        service.start()
        yield service


def run_storage(
    storage: str, scenarios: list[str], seed: int, runs: int, keep: Path | None
) -> list[Row]:
    """The scenarios that apply to `storage` on one new home; with `keep`, the home is left in
    that folder for a look afterwards."""
    rows = []
    with (
        contextlib.nullcontext(keep / storage)
        if keep
        else tempfile.TemporaryDirectory(prefix="faults_") as root,
        tempfile.TemporaryDirectory(prefix="faults_runtime_") as runtime,
    ):
        os.environ["DETECTION_PIPELINE_RUNTIME_DIR"] = runtime
        Path(root).mkdir(parents=True, exist_ok=True)
        try:
            with storage_service(storage, Path(root)) as service:
                data = service.home / "data"
                train_tiny_model(service, data)
                from detection_pipeline.datasets.synthetic import make_dataset

                make_dataset(data / "detect", images=IMAGES_PER_RUN, seed=1)
                images = data / "detect" / "images"
                for fault in (FAULTS[name] for name in scenarios):
                    if storage not in fault.storages:
                        continue
                    started = time.monotonic()
                    row = play(service, storage, runtime, images, fault, seed, runs)
                    row.notes.append(f"{time.monotonic() - started:.0f} s")
                    print(json.dumps(dataclasses.asdict(row)), flush=True)
                    rows.append(row)
        finally:
            stop_fork_servers(runtime)
    return rows


def stop_fork_servers(runtime: str) -> None:
    for pid, (_, command) in processes().items():
        if runtime in command:
            _kill(pid)


COLUMNS = [
    ("scenario", "scenario"),
    ("storage", "storage"),
    ("submitted", "submitted"),
    ("faults", "faults"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("stuck", "stuck"),
    ("orphans", "orphans"),
    ("outside_touched", "outside touched"),
    ("refused", "refused"),
    ("crashed", "refused with a traceback"),
    ("recovery_median_s", "recovery median s"),
    ("recovery_max_s", "recovery max s"),
    ("succeeded", "succeeded"),
    ("failed", "ended error"),
    ("unclear_errors", "unclear errors"),
]


def markdown(rows: list[Row], seed: int, with_commits: bool = False) -> str:
    """The rows as a Markdown table; `with_commits`: a last column, the commit each row was
    measured at (the last of its notes)."""
    titles = [title for _, title in COLUMNS] + (["commit"] if with_commits else [])
    lines = [f"| {' | '.join(titles)} |", f"|{'|'.join('---' for _ in titles)}|"]
    for row in rows:
        values = dataclasses.asdict(row)
        cells = ["–" if values[key] is None else str(values[key]) for key, _ in COLUMNS]
        lines.append(f"| {' | '.join(cells + row.notes[-1:] if with_commits else cells)} |")
    return "\n".join(lines) + f"\n\nSeed {seed}.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--storage", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--scenario", nargs="+", default=list(FAULTS), choices=list(FAULTS))
    parser.add_argument("--runs", type=int, default=30, help="runs per scenario")
    parser.add_argument("--smoke", action="store_true", help="kill-child and kill-daemon, SQLite")
    parser.add_argument("--markdown", type=Path, help="write the table to this file")
    parser.add_argument("--out", type=Path, help="the JSON results (default: bench/results)")
    parser.add_argument("--keep", type=Path, help="leave the homes in this folder")
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        metavar="RESULTS",
        help="only print the table of these result files (a later row of a scenario and "
        "storage replaces an earlier one)",
    )
    args = parser.parse_args()
    if args.table:
        merged: dict[tuple[str, str], Row] = {}
        for path in args.table:
            results = json.loads(path.read_text())
            for values in results["rows"]:
                row = Row(**{**values, "notes": values["notes"] + [results["commit"]]})
                merged[row.scenario, row.storage] = row
        table = markdown(list(merged.values()), results["seed"], with_commits=True)
        print(table)
        if args.markdown:
            args.markdown.write_text(table)
        return
    if args.smoke:
        args.storage, args.scenario, args.runs = ["sqlite"], ["kill-child", "kill-daemon"], 8
    started = time.monotonic()
    rows = [
        row
        for storage in args.storage
        for row in run_storage(storage, args.scenario, args.seed, args.runs, args.keep)
    ]
    table = markdown(rows, args.seed)
    print(table)
    print(f"{time.monotonic() - started:.0f} s in all")
    out = args.out or RESULTS_DIR / f"faults_{'_'.join(args.storage)}_seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"seed": args.seed, "commit": commit(), "rows": [dataclasses.asdict(r) for r in rows]},
            indent=1,
        )
    )
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
