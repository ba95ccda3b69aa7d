"""Files a reader trusts (results, ledger, report, leaderboard, state): written whole or not at all.

Every write goes to a temporary file beside its target and is renamed over it, so a reader (another worker,
the report, DVC) never sees half a file, and a kill leaves the old file or the new one. A full disk is a named
condition, ``DiskFullError``: one line with the path, the bytes it needed and the bytes free, and the
temporary file is removed, so a failed write leaves nothing behind.

    atomic_write_json(Path("results/x/result.json"), result)
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from types import TracebackType
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError

# Errors that mean "this disk cannot take more": no space, or a quota that ran out.
FULL = (errno.ENOSPC, errno.EDQUOT)
# Errors that mean "this place cannot be written": permissions, or a read-only mount.
READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


class DiskFullError(ArchbenchError):
    """No space left where a file had to go; nothing finished was lost, the write can be redone."""

    def __init__(self, path: Path, needed: int | None, hint: str = "") -> None:
        self.path, self.needed = Path(path), needed
        free = free_bytes(self.path)
        need = f"{human(needed)} needed" if needed is not None else "size unknown"
        have = f", {human(free)} free" if free is not None else ""
        super().__init__(f"no space left on the disk of {self.path} ({need}{have}); free space there or point the "
                         f"folder elsewhere, then rerun{'; ' + hint if hint else ''}")


class NotWritableError(ArchbenchError):
    """A folder the command must write is read-only (permissions, a read-only mount or checkout)."""

    def __init__(self, path: Path, what: str, message: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(message or f"{what} {self.path} is not writable (a read-only checkout or mount?); make it "
                                    f"writable, or run from a writable copy of the project")


def human(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def free_bytes(path: Path) -> int | None:
    """Bytes free to this user on the disk holding ``path`` (its nearest existing ancestor)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        stats = os.statvfs(probe)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def errno_in_chain(exc: BaseException | None, codes: tuple[int, ...]) -> OSError | None:
    """The first OSError with one of ``codes`` in ``exc``'s cause/context chain (a library may wrap it)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in codes:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def temp_name(path: Path) -> Path:
    """A unique hidden name beside ``path``: concurrent writers never share a temporary file."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")


def _write_file(path: Path, data: bytes) -> None:
    """The one place bytes reach a file here (the fault tests put a full disk behind it)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _copy_file(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


def atomic_write_bytes(path: Path, data: bytes, hint: str = "") -> None:
    """Write ``data`` to ``path`` atomically; DiskFullError (and no temporary file) on a full disk."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in FULL:
            raise DiskFullError(path, len(data), hint) from None
        raise
    tmp = temp_name(path)
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in FULL:
            raise DiskFullError(path, len(data), hint) from None
        raise


def atomic_write_text(path: Path, text: str, hint: str = "") -> None:
    atomic_write_bytes(path, text.encode("utf-8"), hint)


def atomic_write_json(path: Path, data: Any, hint: str = "") -> None:
    """Sorted keys and a final newline: the same data gives the same bytes."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", hint)


def atomic_copy(src: Path, dst: Path, hint: str = "") -> None:
    """Copy a file atomically (temporary file, then rename); DiskFullError on a full disk."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dst)
    try:
        _copy_file(Path(src), tmp)
        os.replace(tmp, dst)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in FULL:
            raise DiskFullError(dst, Path(src).stat().st_size, hint) from None
        raise


def check_writable(folder: Path, what: str, setting: bool = False) -> None:
    """The folder (or, if it does not exist yet, its nearest existing ancestor) must be a writable folder.
    ``setting``: ``what`` names a key of params.yaml's settings, which the message then points to."""
    path = Path(folder)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ArchbenchError(f"{what} {path} is not a folder ({probe} is a file); point "
                             f"{f'settings.{what}' if setting else 'it'} elsewhere")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise NotWritableError(path, what, f"{what} {path} is not writable ({probe}); fix its permissions or change "
                                           f"settings.{what}" if setting else None)


class swapped_in:
    """A folder built beside ``out`` (starting as hard links of the old one, so unchanged images cost nothing)
    and renamed over it when complete; on any failure it is removed and ``out`` is left as it was."""

    def __init__(self, out: Path, hint: str = "") -> None:
        self.out, self.hint = Path(out), hint
        self.build = self.out.with_name(f".{self.out.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")

    def __enter__(self) -> Path:
        if self.out.is_dir():
            shutil.copytree(self.out, self.build, copy_function=_link_or_copy)
        else:
            self.build.mkdir(parents=True)
        return self.build

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            written = _size(self.build)
            shutil.rmtree(self.build, ignore_errors=True)
            if isinstance(exc, DiskFullError) or errno_in_chain(exc, FULL) is not None:
                # Named as the folder being replaced (the build folder is gone): at least what the new one took
                # before the disk filled, or the old one's size.
                own = exc.needed if isinstance(exc, DiskFullError) and exc.needed is not None else 0
                needed = max(written, _size(self.out), own)
                raise DiskFullError(self.out, needed, self.hint) from None
            return
        if self.out.is_dir() and os.path.ismount(self.out):
            self._copy_into_mount()
            return
        if self.out.is_dir() and _exchange(self.build, self.out):
            shutil.rmtree(self.build, ignore_errors=True)  # now the old folder
            return
        old = self.out.with_name(f".{self.out.name}.{os.getpid()}.old")
        if self.out.exists():
            os.replace(self.out, old)
        os.replace(self.build, self.out)
        shutil.rmtree(old, ignore_errors=True)

    def _copy_into_mount(self) -> None:
        """``out`` is a mount point, which cannot be renamed: its files are replaced one by one (each atomic)."""
        try:
            for src in sorted(p for p in self.build.rglob("*") if p.is_file()):
                dst = self.out / src.relative_to(self.build)
                if not dst.is_file() or not os.path.samefile(src, dst):
                    atomic_copy(src, dst, self.hint)
        finally:
            shutil.rmtree(self.build, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system (a mount inside): a copy
        shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE): a reader sees the old report or the new
    one, never none. False where the call is missing; the caller then renames in two steps."""
    import ctypes

    try:
        rename = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_cwd, exchange = -100, 2
    return rename(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
