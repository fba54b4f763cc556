"""A local PostgreSQL server in a private data directory, for tests and ``make run-full``.

Runs the system binaries (``initdb``, ``pg_ctl``, ``psql``). As root it runs them as the
``postgres`` user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Self
from urllib.parse import quote

from flightdeck_common.devstack.lifecycle import StartStop
from flightdeck_common.devstack.ports import LOOPBACK
from flightdeck_common.devstack.processes import DevstackError, tail_file

SUPERUSER = "postgres"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_TEMP_SOCKET_PREFIX = "fdpg-"  # socket dir made in /tmp when the natural path is too long


def find_pg_bindir() -> Path:
    """Directory holding ``initdb``, ``pg_ctl``, ``postgres`` and ``psql``.

    Taken from the ``pg_ctl`` on PATH (symlinks resolved), else the newest
    ``/usr/lib/postgresql/<version>/bin``. Raises ``FileNotFoundError``.
    """
    needed = ("initdb", "pg_ctl", "postgres", "psql")
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if all((bindir / name).exists() for name in needed):
            return bindir
    raise FileNotFoundError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) not found; "
        "install postgresql or put its bin directory on PATH"
    )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _can_search(path: Path, uid: int, gid: int) -> bool:
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _grant_search(path: Path, uid: int, gid: int) -> None:
    """Let ``uid`` reach ``path``: add o+x (search only, never read) where it is missing.

    Needed as root for directories such as pytest's ``/tmp/pytest-of-root`` (mode 0700).
    """
    for directory in [path, *path.parents]:
        if not _can_search(directory, uid, gid):
            directory.chmod(stat.S_IMODE(directory.stat().st_mode) | stat.S_IXOTH)


class PostgresServer(StartStop):
    """PostgreSQL on 127.0.0.1:``port`` with ``data_dir`` as its cluster.

    ``start()`` runs ``initdb`` when ``data_dir`` is empty (trust authentication, which
    ``initdb`` limits to the Unix socket and the loopback addresses), starts the server,
    then creates the login role ``user`` (CREATEDB) and the ``databases`` it owns when
    they are missing; it is idempotent and works again after ``stop()``, keeping the data.
    ``durable=False`` (the default, for tests) turns fsync and friends off.

    The Unix socket directory and, by default, the log file (``postgres.log``) live next
    to ``data_dir``. As root, the binaries run as the ``postgres`` user: the data
    directory, socket directory and log file are chowned to it, and directories above
    them that it could not traverse get o+x.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        databases: list[str],
        user: str = "flightdeck",
        # Trust authentication on loopback: the password only makes the URLs complete.
        password: str = "flightdeck",  # noqa: S107
        *,
        durable: bool = False,
        log_path: Path | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.port = port
        self.databases = list(databases)
        self.user = user
        self.password = password
        self.durable = durable
        self.log_path = (log_path or self.data_dir.parent / "postgres.log").absolute()
        self._bin_dir = bin_dir
        self._socket_dir: Path | None = None

    # -- public API -------------------------------------------------------------------

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        """SQLAlchemy-style URL, e.g. ``postgresql+asyncpg://flightdeck:pw@127.0.0.1:5432/db``."""
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"{driver}://{credentials}@{LOOPBACK}:{self.port}/{quote(database, safe='')}"

    @property
    def socket_dir(self) -> Path | None:
        """Directory of the Unix socket while the server runs (set by ``start()``)."""
        return self._socket_dir

    def start(self, timeout: float = 60.0) -> Self:
        """Initialise the cluster if needed, start the server, create role and databases."""
        if self.is_running():
            return self
        owner = self._owner()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        self._socket_dir = self._make_socket_dir()
        if owner is not None:
            uid, gid = owner
            for path in (self.data_dir.parent, self.log_path.parent, self._socket_dir):
                _grant_search(path, uid, gid)
            os.chown(self.log_path, uid, gid)
            os.chown(self._socket_dir, uid, gid)
        if self._needs_initdb():
            self._initdb()
        options = [
            f"-p {self.port}",
            f"-k {shlex.quote(str(self._socket_dir))}",
            f"-c listen_addresses={LOOPBACK}",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        argv = [
            self._bin("pg_ctl"), "start",
            "-D", str(self.data_dir),
            "-l", str(self.log_path),
            "-o", " ".join(options),
            "-w", "-t", str(int(timeout)),
        ]  # fmt: skip
        result = self._run(argv, timeout=timeout + 10)
        if result.returncode != 0:
            raise DevstackError(
                f"PostgreSQL failed to start on port {self.port} "
                f"(pg_ctl exit {result.returncode}): {result.stdout.strip()}\n"
                f"last lines of {self.log_path}:\n{tail_file(self.log_path)}"
            )
        try:
            self._ensure_role_and_databases()
        except BaseException:
            self.stop(mode="immediate")
            raise
        return self

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the server (``pg_ctl stop -m mode``); a no-op when it is not running."""
        if not self.is_running():
            return
        argv = [
            self._bin("pg_ctl"), "stop",
            "-D", str(self.data_dir),
            "-m", mode,
            "-w", "-t", str(int(timeout)),
        ]  # fmt: skip
        result = self._run(argv, timeout=timeout + 10)
        if result.returncode != 0 and self.is_running():
            if mode != "immediate":
                self.stop(mode="immediate", timeout=timeout)
                return
            raise DevstackError(f"pg_ctl stop failed: {result.stdout.strip()}")
        if self._socket_dir is not None and self._socket_dir.name.startswith(_TEMP_SOCKET_PREFIX):
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def is_running(self) -> bool:
        """Whether the postmaster named in ``postmaster.pid`` is alive."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False
        except PermissionError:  # alive, owned by another user
            return True
        return True

    def ensure_running(self) -> None:
        """Raise ``DevstackError`` with the log tail if the server is not running."""
        if not self.is_running():
            raise DevstackError(
                f"PostgreSQL on port {self.port} is not running; "
                f"last lines of {self.log_path}:\n{tail_file(self.log_path)}"
            )

    def psql(self, sql: str, database: str = "postgres", *, user: str = SUPERUSER) -> str:
        """Run ``sql`` with psql over TCP and return its unaligned, tuples-only output."""
        argv = [
            self._bin("psql"),
            "-h", LOOPBACK, "-p", str(self.port), "-U", user, "-d", database,
            "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
            "-c", sql,
        ]  # fmt: skip
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        if result.returncode != 0:
            raise DevstackError(f"psql failed on {database!r}: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> None:
        """Create database ``name`` owned by ``user`` unless it exists."""
        # Identifiers and literals are quoted; psql -c has no bind parameters.
        query = f"SELECT 1 FROM pg_database WHERE datname = {_quote_literal(name)}"  # noqa: S608
        exists = self.psql(query)
        if not exists:
            self.psql(f"CREATE DATABASE {_quote_ident(name)} OWNER {_quote_ident(self.user)}")

    # -- internals --------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        if self._bin_dir is None:
            self._bin_dir = find_pg_bindir()
        return str(self._bin_dir / name)

    @staticmethod
    def _owner() -> tuple[int, int] | None:
        """(uid, gid) to run the server binaries as; ``None`` when we are not root."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise DevstackError(
                "running as root, but there is no 'postgres' user to run PostgreSQL as"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _run(self, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a server binary (as ``postgres`` when root), output captured as text."""
        owner = self._owner()
        if owner is not None:
            # Another pytest session may have reset /tmp/pytest-of-root to 0700 meanwhile.
            _grant_search(self.data_dir.parent, *owner)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=self.data_dir.parent,
            timeout=timeout,
            # The postmaster inherits this session: keep it away from the terminal's Ctrl-C.
            start_new_session=True,
            user=owner[0] if owner else None,
            group=owner[1] if owner else None,
            extra_groups=[] if owner else None,
        )

    def _make_socket_dir(self) -> Path:
        socket_dir = self.data_dir.parent / "pg-socket"
        if len(str(socket_dir / f".s.PGSQL.{self.port}.lock")) > _SOCKET_PATH_MAX:
            socket_dir = Path(tempfile.mkdtemp(prefix=_TEMP_SOCKET_PREFIX))
        socket_dir.mkdir(parents=True, exist_ok=True)
        socket_dir.chmod(0o755)
        return socket_dir

    def _needs_initdb(self) -> bool:
        if not self.data_dir.exists() or not any(self.data_dir.iterdir()):
            return True
        if not (self.data_dir / "PG_VERSION").exists():
            raise DevstackError(f"{self.data_dir} is neither empty nor a PostgreSQL data directory")
        return False

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        owner = self._owner()
        if owner is not None:
            os.chown(self.data_dir, *owner)
        argv = [
            self._bin("initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth-local=trust", "--auth-host=trust",
            "-E", "UTF8", "--locale=C",
        ]  # fmt: skip
        if not self.durable:
            argv.append("--no-sync")
        result = self._run(argv, timeout=120)
        with self.log_path.open("a") as log:
            log.write(result.stdout)
        if result.returncode != 0:
            raise DevstackError(f"initdb failed for {self.data_dir}:\n{result.stdout[-4000:]}")

    def _ensure_role_and_databases(self) -> None:
        role = _quote_ident(self.user)
        self.psql(
            "DO $do$ BEGIN "
            f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_quote_literal(self.user)}) "
            f"THEN CREATE ROLE {role} LOGIN CREATEDB PASSWORD {_quote_literal(self.password)}; "
            "END IF; END $do$"
        )
        for database in self.databases:
            self.create_database(database)
