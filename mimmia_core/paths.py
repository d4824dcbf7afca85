"""Checks on paths a user gives: what is wrong with one, in words, before any work starts."""
import os
import tempfile
from pathlib import Path


def can_write_in(folder) -> bool:
    """Whether a file can be created in `folder`, tried for real (permission bits say nothing to root)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def missing_path_reason(path) -> str:
    """Why `path` cannot be opened: a symlink loop, a dangling link, a file in the way, or nothing there."""
    path = Path(path)
    try:
        path.resolve(strict=True)
    except RuntimeError:
        return "a symlink loop"
    except OSError:
        pass
    else:
        return "not readable"
    if path.is_symlink():
        return f"a symlink to {os.readlink(path)}, which does not exist"
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a folder"
    return "no such file or directory"


def require_exists(path, what: str = "") -> Path:
    """`path` as a Path if it exists; else FileNotFoundError naming why (symlink loop, ...)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what + ' ' if what else ''}{path}: {missing_path_reason(path)}")
    return path


def _writable_parent(path: Path, flag: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} {path}: {parent} is a file, so nothing can be written under it")
            if not can_write_in(parent):
                raise ValueError(f"{flag} {path}: the folder {parent} is not writable; choose another {flag}")
            return


def check_output_file(path, flag: str) -> Path:
    """An output file that can be written: not a folder, not under a file, in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'scores.csv'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} exists and is not writable; choose another {flag}")
    _writable_parent(path, flag)
    return path


def check_output_dir(path, flag: str) -> Path:
    """An output folder that exists and is writable, or can be made."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{flag} {path} is a file; give a folder")
        if not can_write_in(path):
            raise ValueError(f"{flag} {path} is not writable; choose another {flag}")
        return path
    _writable_parent(path, flag)
    return path


__all__ = ["can_write_in", "missing_path_reason", "require_exists", "check_output_file", "check_output_dir"]
