"""Fork servers: a process that has paid for its imports once and forks a child per request.

Starting a Python and importing torch and MMDetection takes seconds, Dagster and this code
location another one or two; a fork of a process that has them starts in milliseconds. Two
servers are built on this: the warm worker (MMDetection children, mmdet_runner/warm_worker.py)
and the run worker server (Dagster run workers, instance/run_worker_server.py).

A client connects over a Unix socket (in a folder only its user can open), sends one JSON
request, with file descriptors if the child needs them, and gets `{"pid": N}` back, then
`{"exit": CODE}` when the child ends (negative: killed by that signal, as with Popen).

The server stays single-threaded: forking a threaded process can copy a lock some other thread
holds, and the child would hang on it.
"""

import contextlib
import fcntl
import gc
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

RUNTIME_DIR_ENV = "DETECTION_PIPELINE_RUNTIME_DIR"
MESSAGE_BYTES = 1 << 20  # a request is one small JSON message
REQUEST_TIMEOUT_SECONDS = 10
START_TIMEOUT_SECONDS = 120


class ForkServerUnavailable(RuntimeError):
    pass


class UnsafeRuntimeDir(ForkServerUnavailable):
    """The runtime folder is not this user's alone: another user could plant its sockets, locks
    and logs (as links to files of ours). Runs then go on without fork servers, saying why."""


def _reply(conn: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):  # the client is gone
        conn.send(json.dumps(message).encode())


class ForkServer:
    """Serves fork requests on `path` until stopped, replaced (its socket file removed or taken
    over) or idle for `idle_seconds`; with `parent_pid`, also when that process dies."""

    def __init__(self, path: str, idle_seconds: float, parent_pid: int | None = None):
        self.path = path
        self.idle_seconds = idle_seconds
        self.parent_pid = parent_pid
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a server that was killed
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(8)
        self.inode = os.stat(path).st_ino
        # SIGCHLD wakes select() through this pipe, so an exit is reported at once.
        self.wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.children: dict[int, socket.socket] = {}  # pid: its client's connection
        self.requests: dict[int, dict] = {}  # pid: what it serves
        self.stopping = False

    def prepare(self, request: dict) -> None:
        """Work done here before the fork, so that every later child finds it done."""

    def child(self, request: dict, fds: list[int]) -> int:
        """What the forked child does; returns its exit code."""
        raise NotImplementedError

    def hand_over(self, request: dict, fds: list[int]) -> int | None:
        """The pid of a child forked ahead of the request that took it on; None: none did, and
        one is forked for it."""
        return None

    def child_exited(self, pid: int, request: dict | None) -> None:
        """Called for every child of this process that ended; `request`: what it served, None
        for a child forked ahead that served none."""

    def held_sockets(self) -> list[socket.socket]:
        """What a forked child must close: it holds none of this process's connections open."""
        return [self.listener, *self.children.values()]

    def _still_mine(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except FileNotFoundError:
            return False

    def _should_stop(self, idle_since: float) -> bool:
        return (
            self.stopping
            or not self._still_mine()
            or (self.parent_pid is not None and os.getppid() != self.parent_pid)
            or time.monotonic() - idle_since > self.idle_seconds
        )

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # no children at all
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn:
                _reply(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()
            self.child_exited(pid, self.requests.pop(pid, None))

    def _fork(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        pid = self.hand_over(request, fds)
        if pid is None:
            self.prepare(request)
            pid = self.spawn(lambda: self.child(request, fds), conn)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        self.requests[pid] = request
        _reply(conn, {"pid": pid})

    def spawn(self, work: Callable[[], int], *also_held: socket.socket) -> int:
        """Forks a child that runs `work` and exits with the code it returns; its pid."""
        sys.stdout.flush()
        sys.stderr.flush()
        # The child's garbage collector leaves what it inherits alone: collecting it would take
        # as long as in this big process, and writing to every object copies every page.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for held in (*self.held_sockets(), *also_held):
                held.close()
            os.close(self.wake_read)
            code = 1
            try:
                code = work()
            except SystemExit as error:
                code = error.code if isinstance(error.code, int) else 1
            except BaseException:  # noqa: BLE001 - as a new Python would: print it, exit 1
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        gc.unfreeze()  # this process keeps collecting its own garbage
        return pid

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(REQUEST_TIMEOUT_SECONDS)
        try:
            data, fds, _, _ = socket.recv_fds(conn, MESSAGE_BYTES, 4)
            request = json.loads(data)
        except (OSError, ValueError) as error:
            print(f"bad request: {error}", flush=True)
            conn.close()
            return
        if request.get("stop"):
            self.stopping = True
            conn.close()
            return
        conn.settimeout(None)
        self._fork(conn, request, fds)

    def serve(self) -> None:
        print(f"{type(self).__name__} {os.getpid()} ready on {self.path}", flush=True)
        idle_since = time.monotonic()
        while True:
            readable, _, _ = select.select([self.listener, self.wake_read], [], [], 1.0)
            if self.wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_read, 512)
            self._reap()
            if self.listener in readable and not self.stopping:
                self._accept()
            if self.children:
                idle_since = time.monotonic()
            elif self._should_stop(idle_since):
                break
        if self._still_mine():
            os.unlink(self.path)
        print(f"{type(self).__name__} {os.getpid()} stopped", flush=True)


# The client's side.


def runtime_dir() -> Path:
    """Where the sockets, locks and logs live: DETECTION_PIPELINE_RUNTIME_DIR, else a folder in
    the temp dir. Only this user may own and open it, and it is no link: in a shared temp dir
    another user could have made it first. Raises UnsafeRuntimeDir otherwise."""
    path = Path(
        os.environ.get(RUNTIME_DIR_ENV)
        or Path(tempfile.gettempdir()) / f"detection-pipeline-{os.getuid()}"
    )
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    found = path.lstat()
    if (
        not stat.S_ISDIR(found.st_mode)
        or found.st_uid != os.getuid()
        or stat.S_IMODE(found.st_mode) & 0o077
    ):
        kind = "a link" if stat.S_ISLNK(found.st_mode) else f"mode {stat.S_IMODE(found.st_mode):o}"
        raise UnsafeRuntimeDir(
            f"the runtime folder {path} is not this user's alone ({kind}, owner uid "
            f"{found.st_uid}, this user {os.getuid()}): another user may have made it. Remove it "
            f"(it is remade) or set {RUNTIME_DIR_ENV} to a folder of yours with mode 700"
        )
    return path


def open_private(path: Path, flags: int) -> int:
    """A file descriptor of the file at `path` (made with mode 600), never through a link."""
    return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None
    return conn


def connect_or_start(
    path: Path, command: list[str], log: Path | None = None, **popen
) -> socket.socket:
    """Connects to the server on `path`, first starting it with `command` if none listens; one
    client at a time starts it. Its output goes to `log` (None: where this process's goes)."""
    conn = connect(path)
    if conn:
        return conn
    with open(open_private(path.with_suffix(".lock"), os.O_WRONLY), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = connect(path)
        if conn:
            return conn
        with (
            open(open_private(log, os.O_WRONLY | os.O_APPEND), "a")
            if log
            else contextlib.nullcontext() as output
        ):
            server = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                **popen,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while (conn := connect(path)) is None:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                where = f"; see {log}" if log else ""
                raise ForkServerUnavailable(f"{' '.join(command)} did not start{where}")
            time.sleep(0.1)
        return conn


def request_fork(conn: socket.socket, request: dict, fds: list[int]) -> int:
    """Sends the request; returns the forked child's pid. The connection then carries its exit."""
    try:
        socket.send_fds(conn, [json.dumps(request).encode()], fds)
        conn.settimeout(START_TIMEOUT_SECONDS)  # the server may prepare first (load a model)
        reply = json.loads(conn.recv(MESSAGE_BYTES) or b"{}")
        conn.settimeout(None)
    except (OSError, ValueError) as error:
        conn.close()
        raise ForkServerUnavailable(f"the fork server did not take the request: {error}") from error
    if "pid" not in reply:
        conn.close()
        raise ForkServerUnavailable("the fork server hung up without forking")
    return reply["pid"]


class ForkedChild:
    """A child a fork server forked: the part of `subprocess.Popen` its client uses."""

    def __init__(self, conn: socket.socket, pid: int, stdout=None):
        self.conn = conn
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None

    def _take_exit(self, timeout: float | None) -> None:
        if not select.select([self.conn], [], [], timeout)[0]:
            return
        data = self.conn.recv(MESSAGE_BYTES)
        if data:
            self.returncode = json.loads(data)["exit"]
        else:
            # The server died before it could tell: make sure the child's group is gone too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.returncode = -signal.SIGKILL
        self.conn.close()

    def poll(self) -> int | None:
        if self.returncode is None:
            self._take_exit(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._take_exit(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout)
        return self.returncode


def stop_servers() -> None:
    """Asks every fork server in the runtime folder to stop once its children have ended."""
    for path in runtime_dir().glob("*.sock"):
        conn = connect(path)
        if conn:
            with conn:
                conn.send(json.dumps({"stop": True}).encode())
