"""Writing output files safely: one atomic writer, and the checks on output paths.

Every file essdsl writes (artifacts, manifests, run files, genotypes, plots,
``fmt --write``, ``show -o``) goes through :func:`atomic_write_bytes`: the data
goes to a temporary file beside the target, is flushed to disk, and is renamed
over the target, so a reader (or a crash) never sees half a file.  A failed
write (full disk, read-only folder, a folder where the file should be) raises
:class:`OutputError` with a message that names the path, and removes the
temporary file.  The new file gets the mode of the file it replaces, or the
usual ``0666 & ~umask`` (a temporary file from ``mkstemp`` is 0600).

No torch import here: the language commands use it too.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Union
from essdsl.errors import EssdslError

PathLike = Union[str, Path]
TEMP_SUFFIX = ".tmp"
# Temporary names this module (``.NAME.RANDOM.tmp``) and earlier versions
# (``.NAME.tmpPID``, ``.NAME.PID.tmp``) create; a kill between create and
# rename leaves one behind.
_TEMP_NAME = re.compile(r"^\..+\.(tmp\d+|[A-Za-z0-9_]+\.tmp)$")


class OutputError(EssdslError, OSError):
    """An output file cannot be written; ``str()`` says which and why."""

    def __init__(self, path: PathLike, reason: str, code: int = 0):
        super().__init__(code, reason, str(path))
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied (a read-only place?)"
    return exc.strerror or str(exc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """The mode of the file being replaced, else what ``open()`` would give a new file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def check_output_path(path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Raise :class:`OutputError` when ``path`` cannot be a file essdsl writes:
    a folder, a device or other non-regular file, under a file, or one of ``inputs``."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(target, "it is a folder; give a file name")
    if target.exists() and not target.is_file():
        raise OutputError(target, "it is not a regular file")
    for source in inputs:
        try:
            same = target.exists() and Path(source).exists() and os.path.samefile(target, source)
        except OSError:
            same = False
        if same:
            raise OutputError(target, f"it is the input file {source}; refusing to overwrite it (choose another output)")
    parent = _nearest_existing(target.parent)
    if not parent.is_dir():
        raise OutputError(target, f"{parent} is a file, not a folder")
    return target


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def atomic_write_bytes(path: PathLike, data: bytes, inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (see the module doc)."""
    target = check_output_path(path, inputs)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(target, f"cannot create the folder {directory}: {_reason(exc)}", exc.errno or 0) from None
    mode = _new_file_mode(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise OutputError(target, _reason(exc), exc.errno or 0) from None
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(target, _reason(exc), exc.errno or 0) from None
        raise
    return target


def atomic_write_text(path: PathLike, text: str, inputs: Iterable[PathLike] = ()) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), inputs)


def remove_stale_temp_files(folder: PathLike) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in ``folder``
    (not in subfolders); returns what was removed."""
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if _TEMP_NAME.match(entry.name) and entry.is_file():
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


def check_run_folder(out: Optional[PathLike], run_manifest: str = "manifest.json") -> None:
    """Raise :class:`OutputError` when ``--out`` cannot hold a new run: a file, a
    folder under a file, a read-only place, or a folder with other things in it
    (a run folder of essdsl, or an empty folder, is fine)."""
    if out is None:
        return
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise OutputError(target, "it is a file; --out names the run folder to create")
    if target.is_dir():
        if any(target.iterdir()) and not (target / run_manifest).exists():
            raise OutputError(target, "the folder exists, is not empty and is not an essdsl run folder; choose a new --out")
        if not os.access(target, os.W_OK | os.X_OK):
            raise OutputError(target, "permission denied (a read-only folder?)")
        return
    parent = _nearest_existing(target.parent)
    if not parent.is_dir():
        raise OutputError(target, f"{parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(target, f"cannot create it: {parent} is read-only")


__all__ = [
    "OutputError",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_path",
    "check_run_folder",
    "remove_stale_temp_files",
]
