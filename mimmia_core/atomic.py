"""Atomic writes: a reader never sees half a file, nor a folder whose files come from two writes.

Files: a temp file in the same folder, fsynced, renamed over the target. Folders
(`atomic_dir`): written whole into a temp sibling, renamed into place. Temp
names end in `.tmp`; `clean_stale_tmp` removes those a killed writer left.
Finished work that cannot be written where asked is never dropped: `save_outputs`
writes it to a temporary folder instead and says so with a `WriteWarning`.
"""
import os
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)
STALE_TMP_SECONDS = 3600  # a .tmp older than this belongs to no live writer


class WriteWarning(UserWarning):
    """Something computed could not be written where asked; the text says what, why, and where it is instead."""


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync(path.parent)
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_outputs(files: dict, what: str) -> list[Path]:
    """Write each {path: text or bytes} atomically; returns where each went. A file that cannot be
    written where asked goes to a fresh temporary folder instead, with a WriteWarning naming both."""
    written, spare = [], None
    for path, data in files.items():
        data = data.encode("utf-8") if isinstance(data, str) else data
        try:
            written.append(atomic_write_bytes(path, data))
        except OSError as e:
            spare = spare or Path(tempfile.mkdtemp(prefix="mimmia-unsaved-"))
            written.append(atomic_write_bytes(spare / Path(path).name, data))
            warnings.warn(f"could not write {what} to {path} ({type(e).__name__}: {e}); it is saved at "
                          f"{written[-1]} instead", WriteWarning, stacklevel=2)
    return written


def clean_stale_tmp(folder, prefix: str = "", max_age: float = STALE_TMP_SECONDS) -> None:
    """Remove `prefix*.tmp` files and folders in `folder` older than max_age seconds (a killed writer's)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < max_age:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:  # gone meanwhile, or not ours to remove
            pass


def _carry_over(old: Path, new: Path) -> None:
    """Move the entries of `old` that `new` lacks into `new` (kept subfolders such as epochs/), then drop old."""
    for entry in sorted(old.iterdir()):
        if not (new / entry.name).exists():
            os.rename(entry, new / entry.name)
    shutil.rmtree(old)


def recover_dir(path) -> None:
    """Finish a folder swap that a kill interrupted (see atomic_dir): the old folder comes back
    where the new one never arrived, else its remaining entries move into the new one."""
    path = Path(path).absolute()
    for old in sorted(path.parent.glob(f".{path.name}.*.old")):
        if path.exists():
            _carry_over(old, path)
        else:
            os.rename(old, path)
    clean_stale_tmp(path.parent, prefix=f".{path.name}.")


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename the finished folder tmp to path, the old path (if any) moved aside first and its other entries kept."""
    if not path.exists():
        os.rename(tmp, path)
        return
    old = tmp.with_name(tmp.name[:-len(".tmp")] + ".old")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)
        raise
    _carry_over(old, path)


@contextmanager
def atomic_dir(path):
    """Write a whole folder: `with atomic_dir(p) as tmp:` write into tmp; on success tmp replaces p.

    Entries of an existing p that tmp does not write (e.g. epochs/, train_state.pt) are kept. A
    kill leaves p either as it was or as written, never a mix of both writes' files; the next
    atomic_dir or recover_dir on p tidies up. Where p cannot be renamed (a mount point, or a
    folder we may not write in), the files are replaced one by one instead, with a WriteWarning.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    in_place = os.path.ismount(path) or not os.access(path.parent, os.W_OK | os.X_OK)
    if in_place:
        path.mkdir(exist_ok=True)
        clean_stale_tmp(path, prefix=f".{path.name}.")
    tmp = Path(tempfile.mkdtemp(dir=path if in_place else path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        for f in [*tmp.rglob("*"), tmp]:
            _fsync(f)
        if in_place:
            for entry in sorted(tmp.iterdir()):
                os.replace(entry, path / entry.name)
            os.rmdir(tmp)
            warnings.warn(f"{path} cannot be replaced as a whole (a mount point or a read-only parent folder): "
                          f"its files were replaced one by one", WriteWarning, stacklevel=3)
        else:
            _swap_in(tmp, path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["atomic_write_bytes", "atomic_write_text", "save_outputs", "atomic_dir", "recover_dir",
           "clean_stale_tmp", "WriteWarning", "STALE_TMP_SECONDS"]
