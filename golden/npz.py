"""Reading a case npz: the one file format every model here takes its input in."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

__all__ = ["read_npz"]


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
