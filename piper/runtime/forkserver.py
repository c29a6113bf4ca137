"""Start the ranks of a one-node job by forking a process that has already
imported torch and the worker (a fork server), instead of starting a fresh
interpreter per rank: importing torch costs about 2 s of CPU per process,
most of a small job's start-up.

The launcher starts one server per process (and per environment: a job run
with another environment or working directory gets a new server, so what
the server imported is what a fresh `python -m piper.runtime.worker` would
have imported). The server imports torch, torch.distributed and
piper.runtime.worker, runs no torch operation and starts no thread of its
own, then waits on a socket. For each rank the launcher sends the worker's
arguments, the rank's environment, the working directory and the log file
(as a file descriptor); the server forks, and the child sets up what
`subprocess.Popen` would have (process group, log as stdout and stderr,
environment, SIGTERM when its parent dies) and runs the worker module as
`__main__`, as `python -m` does (or a script the launcher names, as
`python SCRIPT` does: the benchmarks' ranks). The server reaps its children and sends
each exit status back; `ForkedRank` gives the launcher the part of
`Popen`'s interface that `LocalRanks` uses (pid, poll, wait, send_signal,
kill). When the launcher goes away (the socket closes), the server
terminates its running children and exits.

PIPER_FORKSERVER=0 turns it off (every rank a fresh interpreter).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

WORKER = "piper.runtime.worker"
# Set per test by pytest, read by nobody at import: a new value needs no new server.
_VOLATILE = ("PYTEST_CURRENT_TEST",)
_HEADER = struct.Struct("!I")


def enabled() -> bool:
    return (os.environ.get("PIPER_FORKSERVER", "1") != "0" and hasattr(os, "fork")
            and sys.platform.startswith("linux"))


def _send(sock: socket.socket, obj, fds: tuple[int, ...] = ()) -> None:
    data = pickle.dumps(obj)
    msg = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [msg], list(fds))
    else:
        sock.sendall(msg)


def _recv_exact(sock: socket.socket, n: int, fds: list[int]) -> bytes | None:
    buf = b""
    while len(buf) < n:
        data, got, _, _ = socket.recv_fds(sock, n - len(buf), 4)
        fds.extend(got)
        if not data:
            return None
        buf += data
    return buf


def _recv(sock: socket.socket) -> tuple[object, list[int]] | None:
    fds: list[int] = []
    head = _recv_exact(sock, _HEADER.size, fds)
    if head is None:
        return None
    body = _recv_exact(sock, _HEADER.unpack(head)[0], fds)
    if body is None:
        return None
    return pickle.loads(body), fds


# --- launcher side ---------------------------------------------------------


class ForkedRank:
    """A rank the server forked: what LocalRanks needs of a Popen."""

    def __init__(self, server: ForkServer, pid: int, args: list[str]):
        self.server, self.pid, self.args = server, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.server.drain(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.server.drain(0.5 if left is None else min(left, 0.5))
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    def __init__(self, env: dict, cwd: str):
        self.key = _key(env, cwd)
        self.lock = threading.Lock()
        self.ranks: dict[int, ForkedRank] = {}
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "piper.runtime.forkserver", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        theirs.close()
        self.dead = False

    def spawn(self, args: list[str], env: dict, log_file, process_group: int,
              script: str | None = None) -> ForkedRank:
        """Fork a rank running the worker module with `args`, or `script`
        (a Python file run as `__main__`) with them."""
        with self.lock:
            _send(self.sock, {"args": args, "env": env, "cwd": os.getcwd(),
                              "pgid": process_group, "script": script}, (log_file.fileno(),))
            while True:
                got = self._read(None)
                if got is None:
                    raise OSError("the piper fork server exited")
                if "pid" in got:
                    rank = ForkedRank(self, got["pid"], args)
                    self.ranks[rank.pid] = rank
                    return rank
                if "error" in got:
                    raise OSError(f"the piper fork server could not start a rank: {got['error']}")

    def _read(self, timeout: float | None) -> dict | None:
        """One message (an exit is recorded as it passes), or None on timeout/EOF."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return None
        got = _recv(self.sock)
        if got is None:
            self._lost()
            return None
        msg = got[0]
        if "exit" in msg:
            rank = self.ranks.pop(msg["exit"], None)
            if rank is not None:
                rank.returncode = msg["code"]
        return msg

    def drain(self, timeout: float) -> None:
        """Read the exits the server reported (waiting up to `timeout` for one)."""
        with self.lock:
            if self.dead:
                return
            msg = self._read(timeout)
            while msg is not None and not self.dead:
                msg = self._read(0)

    def _lost(self) -> None:
        self.dead = True
        for rank in self.ranks.values():  # their parent is gone: so are they (SIGTERM)
            rank.returncode = -signal.SIGTERM
        self.ranks.clear()

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _key(env: dict, cwd: str) -> tuple:
    return (sys.executable, cwd, tuple(sorted((k, v) for k, v in env.items()
                                              if k not in _VOLATILE)))


_server: ForkServer | None = None
_server_lock = threading.Lock()


def server_for(env: dict) -> ForkServer:
    """This process's fork server for this environment and working directory."""
    global _server
    cwd = os.getcwd()
    with _server_lock:
        key = _key(env, cwd)
        if _server is not None and (_server.key != key or _server.dead
                                    or _server.proc.poll() is not None):
            if not _server.ranks:
                _server.close()
            _server = None
        if _server is None:
            _server = ForkServer(env, cwd)
        return _server


@atexit.register
def _close() -> None:
    if _server is not None:
        _server.close()


# --- server side -----------------------------------------------------------


def _child(req: dict, log_fd: int, sock: socket.socket) -> None:
    code = 1
    try:
        sock.close()
        try:
            os.setpgid(0, req["pgid"])
        except OSError:
            pass  # the server set it already
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: S110 - the server terminates its children when it leaves
            pass
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        script = req.get("script")
        sys.argv = [script or WORKER, *req["args"]]
        try:
            if script:  # what `python SCRIPT ARGS` runs (a benchmark's worker mode)
                import runpy  # lazy: only for a script's ranks

                sys.path[0] = os.path.dirname(os.path.abspath(script))
                runpy.run_path(script, run_name="__main__")
                code = 0
            else:
                from piper.runtime.worker import main

                code = main()  # what `python -m piper.runtime.worker` runs
                code = 0 if code is None else code
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        try:
            atexit._run_exitfuncs()
        except BaseException:  # noqa: S110
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    # what a rank imports, once: every fork starts from here
    import torch  # noqa: F401
    import torch.distributed  # noqa: F401

    import piper.runtime.worker  # noqa: F401

    children: set[int] = set()
    while True:
        r, _, _ = select.select([sock], [], [], 0.05)
        if r:
            got = _recv(sock)
            if got is None:  # the launcher is gone
                for pid in children:
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                return
            req, fds = got
            try:
                pid = os.fork()
            except OSError as e:
                for f in fds:
                    os.close(f)
                _send(sock, {"error": str(e)})
                continue
            if pid == 0:
                _child(req, fds[0], sock)
            for f in fds:
                os.close(f)
            try:
                os.setpgid(pid, pid if req["pgid"] == 0 else req["pgid"])
            except OSError:
                pass
            children.add(pid)
            _send(sock, {"pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve(int(sys.argv[1]))
