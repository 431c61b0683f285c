"""Step 4 of a sweep's run: the result store, one folder per run, keyed by the notebook's
content, its parameters and the code and data that make the result; safe for several writers.

``<root>/runs/<key>/`` holds the executed notebook, the recorded result(s) (``<name>.json``
side files the notebook wrote, and anything else it wrote there, subfolders included) and
``status.json``. The guarantees (docs/lab.md, "The result store"):

- **Whole runs only.** A run is executed in a private temporary folder
  (``runs/.tmp-<key>-<token>``) and appears under its key by one directory rename, so a reader
  never sees half a run. ``status.json`` is written last and holds a SHA-256 of every file of
  the run, in subfolders too: a truncated, altered, added or missing file makes the run read
  as missing, and it is executed again.
- **Each run executed once, with several writers.** A writer takes the run's lease
  (``runs/.lease-<key>``: an exclusive ``flock(2)`` on a file naming the owner's pid, host,
  start time and token) before it looks at, executes or replaces the run, and keeps it until
  the run is in place. A second writer that finds the lease taken waits for it, or (a sweep)
  goes on with other runs and picks the result up at the end. The kernel drops a ``flock``
  when its owner exits, however it exits, so a lease held is an owner alive.
- **Only the dead are cleaned.** :meth:`Store.clean` removes a temporary folder only when no
  live writer owns it: its key's lease is free, or held under another token. For writers on
  several hosts the store needs a file system whose locks all hosts see (NFSv4, where Linux
  maps ``flock`` to byte-range locks); where they do not, a lease file written by another host
  counts as held until it has not been renewed for :data:`LEASE_STALE` seconds (the holder
  renews it every :data:`LEASE_RENEW` seconds).
- **Nothing stale.** The key covers the notebook's cells, the parameters and
  :func:`environment`: the kit's version, a digest of its sources and the digests of the data
  files a notebook reads (``data/cost_params.json``, ``data/measurements.csv``). A result made
  by other code or from other data has another key and is not served: the run is executed
  again. ``status.json`` records the environment, so tables can mark old runs stale.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import traceback
import uuid
import weakref
from pathlib import Path

from .. import __version__
from .execute import execute
from .notebook import canonical, inspect, notebook_hash
# the names, not the submodule: the package's ``record`` is the function (kit/lab/__init__.py)
from .record import DATA_FILES as _DATA_FILES, data_digests as _data_digests
from .parameters import check_params
from .record import load_result, timestamp, write_atomic

STATUS = "status.json"
COMPLETE, FAILED = "complete", "failed"
#: :meth:`Store.execute` with ``wait=False`` found the run's lease taken by another writer
LEASED = "leased"

#: seconds between renewals of a held lease (its file's modification time)
LEASE_RENEW = 30.0
#: a lease file written by another host and not renewed for this many seconds is gone
LEASE_STALE = 600.0
#: seconds between two looks at a lease another writer holds
LEASE_POLL = 0.2

#: the data files every notebook may read, whose digests are part of each run's key
DATA_FILES = _DATA_FILES

HOST = socket.gethostname()
_KIT = Path(__file__).resolve().parents[1]
_TMP = re.compile(r"^\.(tmp|old)-([0-9a-f]+)-([0-9a-f]+)$")

__all__ = ["COMPLETE", "DATA_FILES", "FAILED", "LEASED", "LEASE_RENEW", "LEASE_STALE", "Lease", "STATUS",
           "Store", "canonical", "code_digest", "environment", "notebook_hash", "run_key"]


# ------------------------------------------------------------------ what made a result
@functools.cache
def code_digest() -> str:
    """SHA-256 over the kit's Python sources (``kit/**/*.py``, by relative path and content),
    computed once per process."""
    h = hashlib.sha256()
    for p in sorted(_KIT.rglob("*.py")):
        h.update(p.relative_to(_KIT).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def data_digests() -> dict:
    """``{file name: SHA-256}`` of :data:`DATA_FILES` (:func:`kit.lab.record.data_digests`)."""
    return _data_digests(DATA_FILES)


def environment() -> dict:
    """What a result depends on besides the notebook and its parameters: the kit's version,
    :func:`code_digest` and :func:`data_digests`."""
    return {"kit_version": __version__, "code": code_digest(), "data": data_digests()}


def run_key(nb_hash: str, params: dict, env: dict | None = None) -> str:
    """A run's folder name: the notebook's cells hash, the parameters and the environment
    (:func:`environment` of this process unless given), hashed."""
    env = environment() if env is None else env
    return hashlib.sha256(f"{nb_hash}\n{canonical(params)}\n{canonical(env)}".encode()).hexdigest()[:20]


def _digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + hashlib.sha256(os.readlink(path).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_files(folder: Path) -> dict:
    """``{relative path: digest}`` of every file under ``folder`` (subfolders too; a symbolic
    link by its target's name, never followed), without the top-level ``status.json``."""
    folder = Path(folder)
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            p = base / name
            rel = p.relative_to(folder).as_posix()
            if rel != STATUS:
                out[rel] = _digest(p)
    return out


# ------------------------------------------------------------------ leases
class Lease:
    """An exclusive lease on a file path: ``flock(2)`` on the file, which names the holder
    (``pid``, ``host``, ``started``, ``token`` and what it is for). Taken with
    :meth:`acquire`, given back with :meth:`release` (or a ``with`` block), which removes the
    file; a holder that dies leaves the file, but the kernel drops its lock.

    The file at the path is checked to be the one locked (a releasing holder unlinks it, and a
    waiter may have opened the old one). A file another host wrote counts as held while it was
    renewed in the last :data:`LEASE_STALE` seconds, for file systems whose locks other hosts
    do not see; held leases are renewed every :data:`LEASE_RENEW` seconds by one thread."""

    _held: "weakref.WeakSet[Lease]" = weakref.WeakSet()
    _renewer: threading.Thread | None = None
    _mutex = threading.Lock()

    def __init__(self, path: Path, fd: int, info: dict):
        self.path, self.fd, self.info = path, fd, info

    @property
    def token(self) -> str:
        return self.info["token"]

    @staticmethod
    def _read(fd: int) -> dict | None:
        try:
            data = os.pread(fd, 4096, 0)
            info = json.loads(data) if data else None
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    @classmethod
    def _lock(cls, path: Path, create: bool) -> int | None:
        """An fd of the file at ``path``, locked, that is still the file at ``path``;
        None if another process holds it (or, ``create`` false, there is no file)."""
        while True:
            try:
                fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
            except FileNotFoundError:
                if create:
                    raise
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return None
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)                   # the holder released (unlinked) it meanwhile: again
            if not create and not path.exists():
                return None

    @staticmethod
    def _foreign_and_fresh(fd: int, info: dict | None) -> bool:
        if not info or info.get("host") == HOST:
            return False
        try:
            age = time.time() - os.fstat(fd).st_mtime
        except OSError:
            return False
        return age < LEASE_STALE

    @classmethod
    def acquire(cls, path, *, wait: bool = False, poll: float = LEASE_POLL, **what) -> "Lease | None":
        """The lease on ``path``, or None when another writer holds it (``wait``: wait until
        it is free). ``what`` is written into the lease file beside the owner."""
        path = Path(path)
        while True:
            fd = cls._lock(path, create=True)
            if fd is not None:
                if cls._foreign_and_fresh(fd, cls._read(fd)):
                    os.close(fd)
                else:
                    info = {"pid": os.getpid(), "host": HOST, "started": timestamp(),
                            "token": uuid.uuid4().hex[:12], **what}
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(info, sort_keys=True, default=str).encode(), 0)
                    lease = cls(path, fd, info)
                    cls._track(lease)
                    return lease
            if not wait:
                return None
            time.sleep(poll)

    @classmethod
    def holder(cls, path) -> dict | None:
        """Who holds the lease on ``path`` (its file's contents), or None when it is free.
        A file left by a holder that died is removed."""
        path = Path(path)
        fd = cls._lock(path, create=False)
        if fd is None:
            if not path.exists():
                return None
            try:
                with open(path, "rb") as f:
                    info = json.loads(f.read() or b"null")
            except (OSError, ValueError):
                info = None
            return info if isinstance(info, dict) else {"pid": None, "host": None}
        try:
            info = cls._read(fd)
            if cls._foreign_and_fresh(fd, info):
                return info
            try:
                os.unlink(path)            # the holder is gone: its file goes too
            except FileNotFoundError:
                pass
            return None
        finally:
            os.close(fd)

    @classmethod
    def _track(cls, lease: "Lease") -> None:
        with cls._mutex:
            cls._held.add(lease)
            if cls._renewer is None or not cls._renewer.is_alive():
                cls._renewer = threading.Thread(target=cls._renew_all, name="kit-lease-renewer", daemon=True)
                cls._renewer.start()

    @classmethod
    def _renew_all(cls) -> None:
        while True:
            time.sleep(LEASE_RENEW)
            with cls._mutex:
                held = list(cls._held)
            for lease in held:
                lease.renew()

    def renew(self) -> None:
        """Mark the lease alive now (its file's modification time)."""
        if self.fd is not None:
            try:
                os.utime(self.fd)
            except OSError:
                pass

    def release(self) -> None:
        """Give the lease back: remove its file, then drop the lock."""
        if self.fd is None:
            return
        with Lease._mutex:
            Lease._held.discard(self)
        try:
            if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "fd", None) is not None:
            self.release()


# ------------------------------------------------------------------ the store

def replace_folder(tmp: Path, final: Path, trash: Path) -> None:
    """``tmp`` (a finished folder beside ``final``) becomes ``final`` by renames, so a reader
    sees the old folder or the new one, never a mix; an earlier ``final`` is renamed to
    ``trash`` first and removed after (a crash in between leaves it as ``trash``, never lost
    in place of the new one)."""
    if final.exists() or final.is_symlink():
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)

class Store:
    """Runs under ``root`` (created if missing)."""

    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.runs / key

    def lease_path(self, key: str) -> Path:
        return self.runs / f".lease-{key}"

    def status(self, key: str) -> dict | None:
        """The run's status if it is present and intact, else None (missing, half-written,
        corrupted, a file added or removed: all mean "run it")."""
        d = self.path(key)
        try:
            st = json.loads((d / STATUS).read_text())
            files = st["files"]
            if not isinstance(files, dict) or run_files(d) != files:
                return None
            return st
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def complete(self, key: str) -> bool:
        st = self.status(key)
        return st is not None and st["state"] == COMPLETE

    def stale(self, status: dict, env: dict | None = None) -> bool:
        """The run was made by other code or from other data than ``env`` (this process's
        :func:`environment` unless given)."""
        return status.get("env") != (environment() if env is None else env)

    def leased(self, key: str) -> dict | None:
        """Who holds the run's lease (pid, host, started), or None."""
        return Lease.holder(self.lease_path(key))

    def clean(self) -> int:
        """Remove temporary folders whose writer is gone (its run's lease is free, or held
        under another token); a live writer's are left alone. Returns how many went."""
        by_key: dict[str, list[tuple[Path, str]]] = {}
        n = 0
        for p in self.runs.glob(".*"):
            m = _TMP.match(p.name)
            if m:
                by_key.setdefault(m.group(2), []).append((p, m.group(3)))
            elif p.name.startswith((".tmp-", ".old-")) and p.is_dir():
                # a name this version does not write: an older writer's, removed once it is
                # older than any live lease could be
                try:
                    if time.time() - p.stat().st_mtime > LEASE_STALE:
                        shutil.rmtree(p, ignore_errors=True)
                        n += 1
                except OSError:
                    pass
        for key, items in by_key.items():
            lease = Lease.acquire(self.lease_path(key), purpose="clean")
            if lease is not None:
                with lease:
                    for p, _ in items:
                        shutil.rmtree(p, ignore_errors=True)
                        n += 1
                continue
            holder = self.leased(key) or {}
            for p, token in items:
                if holder.get("token") and token != holder["token"]:
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
        return n

    def _clean_key(self, key: str, keep: str) -> None:
        """With ``key``'s lease held: its temporary folders other than token ``keep``'s."""
        for p in self.runs.glob(f".*-{key}-*"):
            m = _TMP.match(p.name)
            if m and m.group(2) == key and m.group(3) != keep:
                shutil.rmtree(p, ignore_errors=True)

    def execute(self, notebook, params: dict, *, nb_hash: str | None = None, timeout: int = 900,
                kernel_name: str = "python3", wait: bool = True, env: dict | None = None) -> dict:
        """Execute ``notebook`` (a :class:`~kit.lab.notebook.Notebook`, or a name or path,
        inspected here) with ``params`` unless the store holds an intact complete run.
        A failing run (error in a cell, dead kernel, timeout) is stored as failed with its
        error, traceback and executed notebook. Returns the run's status (``skipped``: it was
        not executed here).

        Another writer holding the run's lease: ``wait`` true waits for it, then returns its
        result (or executes the run, if that writer left it unfinished); ``wait`` false
        returns ``{"state": "leased", "holder": ...}`` at once. ``env``: the environment the
        caller keyed the run with (a sweep's); a process whose own differs refuses to run it
        (``ValueError``): its result would be filed under code it was not made by."""
        nb = inspect(notebook)
        check_params(params)
        nb_hash = nb_hash or nb.cells_hash
        mine = environment()
        if env is not None and env != mine:
            raise ValueError(f"store: this process runs other kit code or data than the sweep "
                             f"(kit {mine['kit_version']} code {mine['code'][:12]} data {canonical(mine['data'])}; "
                             f"the sweep's: kit {env.get('kit_version')} code {str(env.get('code'))[:12]} "
                             f"data {canonical(env.get('data'))})")
        key = run_key(nb_hash, params, mine)
        st = self.status(key)
        if st is not None and st["state"] == COMPLETE:
            return {**st, "skipped": True}
        lease = Lease.acquire(self.lease_path(key), wait=wait, key=key, notebook=nb.name)
        if lease is None:
            return {"key": key, "state": LEASED, "holder": self.leased(key), "params": params, "skipped": True}
        with lease:
            st = self.status(key)
            if st is not None and st["state"] == COMPLETE:      # another writer finished it
                return {**st, "skipped": True}
            self._clean_key(key, keep=lease.token)
            return {**self._run(nb, nb_hash, params, key, lease.token, timeout, kernel_name, mine), "skipped": False}

    def _run(self, nb, nb_hash, params, key, token, timeout, kernel_name, env) -> dict:
        """Execute into a temporary folder and rename it into place (the lease is held)."""
        tmp = self.runs / f".tmp-{key}-{token}"
        final = self.path(key)
        tmp.mkdir()
        started, t0 = timestamp(), time.perf_counter()
        state, error, tb = COMPLETE, None, None
        # the run's side files go to its own folder, whatever outdir the parameters name
        run_params = {k: v for k, v in params.items() if k != "outdir"}
        try:
            execute(nb, run_params, tmp, timeout=timeout, kernel_name=kernel_name, final=final,
                    bokehjs="none")     # the sweep's report embeds BokehJS once for every run
        except Exception as e:       # the run failed; the sweep goes on
            last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
            state, error, tb = FAILED, f"{type(e).__name__}: {last}", traceback.format_exc()
        status = {"key": key, "state": state, "notebook": nb.path.name, "notebook_hash": nb_hash,
                  "params": params, "error": error, "traceback": tb, "started": started,
                  "finished": timestamp(), "seconds": round(time.perf_counter() - t0, 3),
                  "host": HOST, "pid": os.getpid(), "env": env, "outdir": str(final.resolve()),
                  "files": run_files(tmp)}
        write_atomic(tmp / STATUS, json.dumps(status, sort_keys=True, default=str))
        replace_folder(tmp, final, self.runs / f".old-{key}-{token}")   # a failed or corrupted earlier run goes
        return status

    def results(self, key: str) -> list[dict]:
        """The recorded result documents of a run (its side files)."""
        d = self.path(key)
        out = []
        for p in sorted(d.glob("*.json")):
            if p.name != STATUS:
                try:
                    out.append(load_result(p))
                except ValueError:
                    pass
        return out
