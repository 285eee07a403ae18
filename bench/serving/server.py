"""Start, probe and stop one SGLang HTTP server (``python -m sglang.launch_server``).

The server runs in its own process group (scheduler and detokenizer children included) so
:meth:`Server.stop` can end all of it; use it as a context manager so it is stopped even
when a benchmark run fails or is interrupted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional

# Every CPU server, the baseline included, runs without overlap scheduling: MTP servers turn it
# off on a CPU by default (sglang_mtp.sglang_plugin.flags.cpu_overlap_off), so the baseline does
# too and the ratios compare decoding, not scheduling (overlap off is faster for both on a CPU).
CPU_FLAGS = ["--device", "cpu", "--attention-backend", "torch_native", "--disable-cuda-graph",
             "--dtype", "float32", "--mem-fraction-static", "0.3", "--max-total-tokens", "8192",
             "--disable-overlap-schedule"]


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1, below the kernel's ephemeral range
    where it can: a port from that range (``bind(0)``) is also what every outgoing connection
    takes as its local port, so with servers starting around it one was taken before its server
    bound it. (SGLang picks the ports its children bind later the same way.)"""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for port in random.sample(range(20000, max(20001, ephemeral)), 32):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(model: str, port: int, mode_flags: List[str], device: str,
                   extra: Optional[List[str]] = None, python: str = sys.executable) -> List[str]:
    """The full ``launch_server`` command line for one mode."""
    cmd = [python, "-m", "sglang.launch_server", "--model-path", model, "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]
    if device == "cpu":
        cmd += CPU_FLAGS
    return cmd + list(mode_flags) + list(extra or [])


class ServerError(RuntimeError):
    """The server exited or never became healthy; the message ends with its log tail."""


class Server:
    """A running ``launch_server`` process group; ``url`` is its base address."""

    def __init__(self, cmd: List[str], port: int, log_path: Path, env: Optional[dict] = None):
        self.cmd, self.port, self.log_path = cmd, port, Path(log_path)
        self.url = f"http://127.0.0.1:{port}"
        self.proc: Optional[subprocess.Popen] = None
        self._env = env

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        log.write((" ".join(self.cmd) + "\n").encode())
        log.flush()
        env = dict(os.environ, **(self._env or {}))
        # start_new_session: the server and every child it spawns share one process group.
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()

    def wait_healthy(self, timeout: float, port_retries: int = 3) -> float:
        """Block until ``/health`` answers 200; returns the seconds it took.

        A port can be taken between :func:`free_port` and the server's bind (by another
        process's socket, while several servers start at once); SGLang then logs the bind error
        and its process stays up without serving, or kills itself when its warm-up request
        reaches that other socket. The server is then started again on another free port
        (``url`` and ``port`` follow), at most ``port_retries`` times."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if port_retries > 0 and self._port_taken():
                self.stop()
                port_retries -= 1
                self._move_to(free_port())
                self.start()
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with code {self.proc.returncode} during start-up\n"
                                  + self.log_tail())
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1.0)
        raise ServerError(f"server not healthy after {timeout:.0f} s\n" + self.log_tail())

    def _port_taken(self) -> bool:
        needle = f"{self.port}): address already in use"
        try:
            return any(needle in line for line in self.log_path.read_text(errors="replace").splitlines())
        except OSError:
            return False

    def _move_to(self, port: int) -> None:
        at = self.cmd.index("--port") + 1
        self.cmd = self.cmd[:at] + [str(port)] + self.cmd[at + 1:]
        self.port, self.url = port, f"http://127.0.0.1:{port}"

    def get_json(self, path: str) -> Optional[dict]:
        """GET ``path`` as JSON, or None when the server does not answer it."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def post(self, path: str) -> bool:
        req = urllib.request.Request(self.url + path, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the whole process group, SIGKILL whatever is left after ``grace`` s.

        A SIGINT/SIGTERM arriving meanwhile is held until the server is gone (then raised as
        KeyboardInterrupt), so an impatient Ctrl-C cannot leave a server running.
        """
        if threading.current_thread() is not threading.main_thread():
            return self._stop(grace)
        pending = []
        held = {s: signal.signal(s, lambda n, _f: pending.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._stop(grace)
        finally:
            for s, handler in held.items():
                signal.signal(s, handler)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]} during server shutdown")

    def _stop(self, grace: float) -> None:
        if self.proc is None:
            return
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            pgid = None
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if pgid is None:
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            if _wait_group_gone(pgid, wait, self.proc):
                break
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(text[-lines:])


def _wait_group_gone(pgid: int, timeout: float, leader: subprocess.Popen) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        leader.poll()  # reap the leader: a zombie would keep the group "alive"
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        time.sleep(0.2)
    return False
