"""Atomic file output: a crash or a kill never leaves a half-written file behind, a failed write
is one line naming the file, and the temporary files a killed writer leaves are removed by the
next run (:func:`remove_stale_temps`, called by :func:`prepare_output_dir`)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

# atomic_open's temporary files: ".<name>.<8 random chars>.pid<writer pid>.tmp"; files of older
# versions have no ".pid<N>" part.
_TEMP = re.compile(r"^\.(?P<name>.+?)\.[a-z0-9_]{8}(?:\.pid(?P<pid>\d+))?\.tmp$")


class WriteError(OSError):
    """An output file or folder that cannot be written (full disk, read-only or missing folder,
    no permission); ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it is flushed, synced and
    renamed over ``path`` (``os.replace`` is atomic on POSIX); on error it is removed. An
    ``OSError`` of the output itself (full disk, read-only folder, ...) becomes a
    :class:`WriteError` naming ``path``."""
    if "r" in mode or "a" in mode:
        raise ValueError(f"atomic_open is for writing whole files, got mode {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".pid{os.getpid()}.tmp", dir=path.parent)
    except OSError as err:
        raise WriteError(path, f"cannot be written ({_reason(err)})") from None
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # Errors of the output (no file name, or the temporary's) name the file being written;
        # others (a file the caller was reading, say) pass unchanged.
        if isinstance(err, OSError) and not isinstance(err, WriteError) and err.filename in (None, tmp):
            raise WriteError(path, f"cannot be written ({_reason(err)})") from None
        raise


def _process_start(pid: int) -> float | None:
    """Start time (seconds since the epoch, ~1 s resolution) of a live process, from /proc;
    None where that cannot be read (no such process, not Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _is_stale(entry: os.DirEntry, pid: str | None, started: float) -> bool:
    """Stale: last written before this process started, and its writer (the pid in its name)
    is gone or is a later process that reuses the pid. Old-style names (no pid): by time only."""
    mtime = entry.stat(follow_symlinks=False).st_mtime
    if mtime >= started - 1.0:
        return False
    if pid is None:
        return True
    if not _alive(int(pid)):
        return True
    owner_start = _process_start(int(pid))
    return owner_start is not None and owner_start > mtime + 1.0


def remove_stale_temps(
    folder: str | os.PathLike, *, recursive: bool = False, names: Iterable[str] | None = None
) -> list[Path]:
    """Remove the temporary files of :func:`atomic_open` that a killed or crashed writer left in
    ``folder`` (and its subfolders when ``recursive``; only those of the files ``names`` when
    given), and say so in one log line. A temporary of a live writer is kept. Returns the
    removed paths."""
    folder = Path(folder)
    started = _process_start(os.getpid()) or time.time()
    wanted = set(names) if names is not None else None
    removed, size = [], 0
    pending = [folder]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if recursive and entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
                continue
            m = _TEMP.match(entry.name)
            if not m or (wanted is not None and m["name"] not in wanted) or not entry.is_file():
                continue
            try:
                if _is_stale(entry, m["pid"], started):
                    size += entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except FileNotFoundError:  # its writer finished (or another cleaner was first)
                continue
    if removed:
        logger.warning(
            "removed %d stale temporary file(s) (%.1f MB) left in %s by an interrupted run",
            len(removed),
            size / 2**20,
            folder,
        )
    return removed


def prepare_output_dir(folder: str | os.PathLike, *, clean: bool = True) -> Path:
    """Create ``folder`` if needed and check, before any work, that files can be written there
    (a probe file is created and removed) and that the disk is not full; then remove the stale
    temporaries of an interrupted run (``clean``). Raises :class:`WriteError`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(folder, "is a file, not a folder") from None
    except OSError as err:
        raise WriteError(folder, f"cannot create the output folder ({_reason(err)})") from None
    if not folder.is_dir():
        raise WriteError(folder, "is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise WriteError(folder, f"the output folder is not writable ({_reason(err)})") from None
    if shutil.disk_usage(folder).free == 0:
        raise WriteError(folder, "no space left on the output folder's disk")
    if clean:
        remove_stale_temps(folder)
    return folder
