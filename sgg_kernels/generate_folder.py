"""The output folder of ``python -m sgg_kernels.generate``: part files written atomically, read back with
every failure naming the file, and merged into OUT/samples.npz.

Any rerun can finish a folder. A part that cannot be read (truncated, empty, corrupted: a disk that
filled up, a copy cut short) is moved aside to ``<name>.bad`` with a message, and its seeds are made
again. Two runs into one folder (say with different --batch-size) may write a seed twice: copies that
are bitwise equal are merged as one; copies that differ are refused, naming both files.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

PART_GLOB = "seeds-*.npz"
UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, OSError)


def atomic_savez(path: Path, *arrays, **named) -> None:
    """np.savez to a temporary name, flushed to disk, then renamed: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, *arrays, **named)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_part(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seeds, samples, labels) of one part, fully read (so a bad CRC shows here); raises ValueError
    naming the file when it cannot be read or its arrays disagree."""
    try:
        with np.load(path) as part:
            seeds, samples, labels = part["seeds"], part["samples"], part["labels"]
    except UNREADABLE as e:
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e})") from e
    if not len(seeds) == len(samples) == len(labels):
        raise ValueError(f"{path} holds {len(seeds)} seeds, {len(samples)} samples and {len(labels)} labels")
    return seeds, samples, labels


def set_aside_unreadable_parts(parts: Path) -> list[Path]:
    """Moves every part that cannot be read to <name>.bad (its seeds are then made again); returns them."""
    moved = []
    for path in sorted(parts.glob(PART_GLOB)):
        try:
            read_part(path)
        except ValueError as e:
            aside = path.with_name(path.name + ".bad")
            os.replace(path, aside)
            print(f"generate: {e}; moved it to {aside.name}, and its seeds will be generated again")
            moved.append(aside)
    return moved


def seeds_done(parts: Path) -> set[int]:
    done: set[int] = set()
    for path in parts.glob(PART_GLOB):
        done.update(read_part(path)[0].tolist())
    return done


def has_parts(parts: Path) -> bool:
    return parts.exists() and any(parts.glob(PART_GLOB))


def merge(out: Path, seeds: Iterable[int]) -> Path:
    """OUT/samples.npz with every requested seed exactly once, in the order requested."""
    rows: dict[int, tuple[np.ndarray, int, Path]] = {}
    for path in sorted((out / "parts").glob(PART_GLOB)):
        part_seeds, samples, labels = read_part(path)
        for s, x, y in zip(part_seeds.tolist(), samples, labels):
            if s in rows:
                x0, y0, first = rows[s]
                if not (np.array_equal(x0, x) and y0 == int(y) and x0.dtype == x.dtype):
                    raise RuntimeError(
                        f"seed {s} was written twice with different results, in {first} and in {path} (two runs "
                        "into one folder with settings that change the bits, e.g. --batch-size on a model whose "
                        "output depends on the batch); delete one of the two files and rerun to finish")
                continue
            rows[s] = (x, int(y), path)
    seeds = list(seeds)
    missing = [s for s in seeds if s not in rows]
    if missing:
        raise RuntimeError(f"{len(missing)} seeds have no sample (first {missing[:5]}); rerun to finish them")
    samples = np.stack([rows[s][0] for s in seeds])
    labels = np.array([rows[s][1] for s in seeds], dtype=np.int64)
    path = out / "samples.npz"
    atomic_savez(path, samples, labels, seeds=np.array(seeds, dtype=np.int64))
    for tmp in (out / "parts").glob(".*.tmp-*"):  # left by a killed run, not one still writing
        if not _alive(int(tmp.name.rpartition("-")[2])):
            tmp.unlink(missing_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
