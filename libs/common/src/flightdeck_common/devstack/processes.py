"""Child processes with their own process group, a log file, and a clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from flightdeck_common.devstack.lifecycle import StartStop

_PROC = Path("/proc")


class DevstackError(RuntimeError):
    """A local server or process of the development stack failed."""


class ProcessExitedError(DevstackError):
    """A managed process exited while it was expected to run."""

    def __init__(self, name: str, returncode: int | None, log_path: Path, log_tail: str) -> None:
        self.name = name
        self.returncode = returncode
        self.log_path = log_path
        self.log_tail = log_tail
        super().__init__(
            f"{name} exited with code {returncode} (log: {log_path}); last lines:\n{log_tail}"
        )


def tail_file(path: Path, lines: int = 40, *, offset: int = 0) -> str:
    """Return the last ``lines`` lines of ``path`` after byte ``offset`` ("" if missing)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(offset, size - 64 * 1024)
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``."""
    if not _PROC.is_dir():  # not Linux: fall back to "is anyone there at all"
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..." where comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class ManagedProcess(StartStop):
    """A child process started in its own process group with output sent to a log file.

    ``env`` is the complete environment of the child (``None``: inherit ours). The log
    file is appended to; ``tail()`` only shows what the current run wrote. The process
    can be started again after ``stop()``.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self) -> Self:
        """Start the process (a no-op when it is already running)."""
        if self.is_running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own group: terminal Ctrl-C does not reach it
            )
        return self

    @property
    def pid(self) -> int | None:
        """Pid of the group leader, once started."""
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the process has exited, else ``None``."""
        return self._popen.poll() if self._popen is not None else None

    @property
    def is_running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def ensure_running(self) -> None:
        """Raise ``ProcessExitedError`` (with the log tail) if the process has exited."""
        if self._popen is None:
            raise DevstackError(f"{self.name} was never started")
        if self._popen.poll() is not None:
            raise ProcessExitedError(self.name, self._popen.returncode, self.log_path, self.tail())

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines this run wrote to the log file."""
        return tail_file(self.log_path, lines, offset=self._log_offset)

    def run_output(self) -> str:
        """Everything the current run wrote to the log file (earlier runs' lines excluded)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def terminate(self) -> None:
        """Send SIGTERM to the whole process group without waiting."""
        self._signal_group(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the whole process group and return the leader's exit code.

        Sends SIGTERM to the group, waits up to ``timeout`` seconds for the leader and
        every other member to exit, then SIGKILLs whatever is left.
        """
        popen = self._popen
        if popen is None:
            return None
        pgid = popen.pid
        if popen.poll() is not None and not _group_members(pgid):
            return popen.returncode
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=max(deadline - time.monotonic(), 0))
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if popen.poll() is None or _group_members(pgid):
            self._signal_group(signal.SIGKILL)
            popen.wait()
            kill_deadline = time.monotonic() + 5.0  # SIGKILL is delivered asynchronously
            while _group_members(pgid) and time.monotonic() < kill_deadline:
                time.sleep(0.01)
        return popen.returncode

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._popen is None:
            return
        # The group id is the leader's pid (start_new_session); it stays reserved while
        # any member lives, so it cannot name somebody else's group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signum)

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, running={self.is_running})"
