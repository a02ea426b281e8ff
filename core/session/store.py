"""Sessions on disk: a folder with a typed manifest plus safetensors files it names.

Crash safety: every file is written atomically, and tensor files get a fresh name on
each write (`ranking-0003.safetensors`). The manifest is written last and names the files
it relies on, so a run killed at any point leaves a session that opens at its last good
state; files no manifest names are removed at the next save. The format is documented in
sessions/README.md.

Threads: the engine changes the manifest from worker threads while a UI saves its own
settings; every change goes through `edit()`, which holds the session's lock while the
manifest is changed and written. Processes: one writer per session, by an OS lock
(core/session/lock.py); commands that only read open it read-only when it is taken.
"""

from __future__ import annotations

import shutil
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

from core.errors import WorkbenchError, first_line
from core.session.atomic import StreamedSafetensors, checksum, write_safetensors
from core.session.listing import list_sessions
from core.session.lock import SessionBusy, SessionUnwritable, acquire, first_holder, release
from core.session.manifest import Manifest, read_manifest, write_manifest
from core.session.paths import MANIFEST, check_name, session_path

#: how often a read-only open retries when a writer replaced the files between its manifest and their opening
_READ_TRIES = 5


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("lrp-workbench", "torch", "transformers", "lxt"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Session:
    """A session folder, open for writing (holding its lock) or read-only.

    Read-only (`open(..., mode="read")` when another process holds the lock, or the folder cannot be
    written): the session works as usual in memory, but nothing is written to its folder; `busy` says
    why. A read-only session holds the tensor files its manifest names open, so a writer that replaces
    them meanwhile (and removes the old ones) does not pull them from under it.
    """

    def __init__(self, path: Path, manifest: Manifest, lock_key: str | None = None, busy: str | None = None,
                 held: dict[str, object] | None = None):
        self.path = path
        self.manifest = manifest
        self._lock = threading.RLock()
        self.read_only = lock_key is None
        self.busy = busy  # why it is read-only
        self._memory: dict[str, dict[str, torch.Tensor]] = {}  # read-only: tensors written in this process
        self._held = held or {}  # read-only: file name -> its open file (kept readable after a writer removes it)
        self._release = weakref.finalize(self, release, lock_key) if lock_key is not None else None

    def close(self) -> None:
        """Give up the writer lock (also done when the object goes away or the process ends)."""
        for f in self._held.values():
            f.close()
        self._held = {}
        if self._release is not None:
            self._release()  # runs once
            self.read_only = True

    @property
    def name(self) -> str:
        return self.path.name

    # ---- lifecycle -------------------------------------------------------------------
    @classmethod
    def create(cls, store: Path, name: str) -> "Session":
        path = session_path(store, name)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkbenchError(f"cannot create session folder {path} ({exc.strerror or exc}); "
                                 "choose a writable --sessions-dir") from None
        key = acquire(path)
        try:
            s = cls(path, Manifest(name=name, created=now()), key)
            s.save()
        except BaseException:
            release(key)
            raise
        return s

    @classmethod
    def open(cls, store: Path, name: str, mode: str = "write") -> "Session":
        """mode "write" takes the session's lock (SessionBusy if another process has it); "read" opens it
        read-only instead when it is taken or its folder cannot be written."""
        path = session_path(store, name)  # a name is a name: checked before any path is formed from it
        if not (path / MANIFEST).is_file():
            known = ", ".join(row["name"] for row in list_sessions(store)) or "none yet"
            raise WorkbenchError(f"no session {name!r} in {store} (known: {known}); start one with `workbench score --session {name}`")
        key, busy = None, None
        try:
            key = acquire(path)
        except (SessionBusy, SessionUnwritable) as exc:
            if mode != "read":
                raise
            busy = str(exc)
        try:
            if key is not None:
                if first_holder(key):
                    _remove_stale_temporaries(path)  # only the lock holder may: no other writer can be mid-write
                manifest, legacy = read_manifest(path / MANIFEST)
                held = None
            else:
                manifest, legacy, held = _read_and_hold(path)
        except BaseException:
            if key is not None:
                release(key)
            raise
        session = cls(path, manifest, key, busy, held)
        if legacy is not None:  # written by format 1: convert its tensors once, then save as format 2
            from core.session.migrate import finish_v1

            finish_v1(manifest, legacy, session.read_tensors, session.write_tensors)
            session.save()
        return session

    @classmethod
    def open_or_create(cls, store: Path, name: str) -> "Session":
        if (session_path(store, name) / MANIFEST).exists():
            return cls.open(store, name)
        return cls.create(store, name)

    def is_empty(self) -> bool:
        """Nothing computed yet: no scores (finished or under way), no plan, no evaluation, circuit or correction."""
        m = self.manifest
        return (m.ranking is None and not m.sums and m.plan is None and not m.history and not m.circuits
                and m.correction is None)

    def save(self) -> None:
        if self.read_only:
            return  # another process writes this session; changes stay in memory
        with self._lock:
            self.manifest.updated = now()
            self.manifest.versions = versions()
            write_manifest(self.path / MANIFEST, self.manifest)
            self._collect_garbage()

    @contextmanager
    def edit(self, save: bool = True) -> Iterator[Manifest]:
        """Change the manifest under the session's lock; written when the block ends (unless `save` is off)."""
        with self._lock:
            yield self.manifest
            if save:
                self.save()

    def _collect_garbage(self) -> None:
        named = self.manifest.files()
        for f in self.path.glob("*.safetensors"):
            if f.name not in named:
                f.unlink(missing_ok=True)
        for file in [f for f in self.manifest.checksums if f not in named and not (self.path / f).exists()]:
            del self.manifest.checksums[file]

    # ---- tensors ---------------------------------------------------------------------
    def _new_file(self, stem: str) -> str:
        with self._lock:
            self.manifest.counter += 1
            return f"{stem}-{self.manifest.counter:04d}.safetensors"

    def write_tensors(self, stem: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
        """Write a new tensor file; the caller records its name in the manifest, which is saved after it."""
        name = self._new_file(stem)
        if self.read_only:
            self._memory[name] = tensors
            return name
        write_safetensors(self.path / name, tensors, metadata)
        with self._lock:
            self.manifest.checksums[name] = {k: checksum(v) for k, v in tensors.items()}
        return name

    @contextmanager
    def stream_tensors(self, stem: str, layout: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                       metadata: dict[str, str] | None = None) -> Iterator["_Writer"]:
        """A new tensor file written one tensor at a time (`put`) as each is made; it appears only when
        the block ends with every tensor of `layout` written. The caller records `.name` in the manifest."""
        name = self._new_file(stem)
        if self.read_only:
            held: dict[str, torch.Tensor] = {}
            yield _Writer(name, lambda key, t: held.__setitem__(key, t.detach().cpu()))
            self._memory[name] = held
            return
        sums: dict[str, int] = {}

        def put(key: str, t: torch.Tensor) -> None:
            stream.put(key, t)
            sums[key] = checksum(t)

        with StreamedSafetensors(self.path / name, layout, metadata) as stream:
            yield _Writer(name, put)
        with self._lock:
            self.manifest.checksums[name] = sums

    def tensor_file(self, file: str) -> Path | None:
        """Where a tensor file the manifest names is (None: held in memory by a read-only session)."""
        if file in self._memory:
            return None
        path = self.path / file
        if path.is_file():
            return path
        held = self._held.get(file)
        if held is not None and Path(f"/proc/self/fd/{held.fileno()}").exists():  # a writer removed it since we opened
            return Path(f"/proc/self/fd/{held.fileno()}")
        raise WorkbenchError(f"session {self.name!r} lost {file}; re-run `workbench score --session {self.name}`")

    def checker(self, file: str):
        """`check(key, tensor)` for tensors read from `file`: refuses one whose bytes differ from what was written
        (a no-op for files written before checksums were kept)."""
        sums = dict(self.manifest.checksums.get(file) or {})

        def check(key: str, t: torch.Tensor) -> None:
            want = sums.get(key)
            if want is not None and checksum(t) != want:
                raise WorkbenchError(f"session {self.name!r}: {file} is corrupt ({key} differs from what was written); "
                                     f"re-run `workbench score --session {self.name}`")

        return check

    def read_tensors(self, file: str) -> dict[str, torch.Tensor]:
        if file in self._memory:
            return self._memory[file]
        path = self.tensor_file(file)
        check = self.checker(file)
        try:
            with safe_open(path, framework="pt") as f:
                out = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise WorkbenchError(f"{self.path / file} is unreadable ({first_line(exc, 200)}); "
                                 f"re-run `workbench score --session {self.name}`") from None
        for k, t in out.items():
            check(k, t)
        return out

    def intact(self, file: str) -> bool:
        """Whether `file` is there, readable and, where checksums were kept, exactly as written."""
        try:
            if self.tensor_file(file) is None:
                return True
            self.read_tensors(file)
        except WorkbenchError:
            return False
        return True

    def describe(self) -> str:
        """The manifest as indented JSON (`workbench session show`)."""
        return self.manifest.model_dump_json(indent=2)

    def delete(self) -> None:
        if self.read_only:
            raise WorkbenchError(f"session {self.name!r} is in use ({self.busy}); it was not deleted")
        self.close()
        shutil.rmtree(self.path)


def _remove_stale_temporaries(path: Path) -> None:
    """Half-written files of a killed writer (`.NAME.RANDOM.tmp`). Only the lock holder calls this."""
    for f in path.glob(".*.tmp"):
        try:
            f.unlink()
        except OSError:
            pass


def _read_and_hold(path: Path) -> tuple[Manifest, object, dict[str, object]]:
    """A read-only open: the manifest, and every tensor file it names held open. A writer may replace files
    between the two steps; then the manifest is read again."""
    for _ in range(_READ_TRIES):
        manifest, legacy = read_manifest(path / MANIFEST)
        held: dict[str, object] = {}
        try:
            for file in sorted(manifest.files()):
                held[file] = open(path / file, "rb")
        except FileNotFoundError:  # replaced since the manifest was read: read the newer one
            for f in held.values():
                f.close()
            continue
        except OSError:
            pass  # an unreadable file is reported when it is used
        return manifest, legacy, held
    return manifest, legacy, {}  # a writer busier than we are: missing files are reported when used


class _Writer:
    """What `Session.stream_tensors` hands out: the file's name, and `put(key, tensor)`."""

    def __init__(self, name: str, put):
        self.name = name
        self.put = put

    def put_all(self, tensors: dict[str, torch.Tensor]) -> None:
        for key, t in tensors.items():
            self.put(key, t)
