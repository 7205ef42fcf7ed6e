"""Reading and writing npz files: the one file format every model here takes its input in."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["read_npz", "write_npz"]


def read_npz(path, error: type[Exception]) -> dict:
    """The named arrays of the npz at `path`; any problem with the file (missing, not an npz,
    unreadable, an object array that would need pickle) raises `error` with a message that
    starts with the path."""
    path = Path(path)
    if not path.is_file():
        raise error(f"case file {path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):     # a bare .npy array
            raise error("not an npz archive of named arrays")
        with archive:
            return {key: _load_key(archive, key, error) for key in archive.files}
    except error as failure:
        raise error(f"{path}: {failure}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as failure:
        raise error(f"{path}: cannot read as an npz case ({failure})") from None


def _load_key(archive, key: str, error: type[Exception]) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as failure:     # object arrays need pickle, which is refused
        raise error(f"{key}: cannot be read ({failure})") from None


def write_npz(path, arrays: dict) -> Path:
    """np.savez to a temporary file next to `path`, then rename: the file is written whole or
    not at all (never a partial file, never the ".npz" np.savez would append)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "xb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
