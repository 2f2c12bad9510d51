"""Conditions as rows: which requests can share a batch, and their conditions stacked and sliced.

A condition is a tensor or a pytree (dicts, tuples, lists) of them. To batch requests, every tensor
leaf must hold the request's samples along dim 0, so that rows can be stacked across requests and
sliced per pass; non-tensor leaves (flags, strings) must be equal within a batch.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor
from torch.utils import _pytree as pytree


def _signature(value: Any, rows: int, name: str) -> tuple:
    """What must match for two conditions to stack: the tree, each tensor's trailing shape, dtype and
    device, and each other leaf's value. Checks that every tensor leaf has `rows` rows."""
    leaves, spec = pytree.tree_flatten_with_path(value)
    parts = []
    for path, leaf in leaves:
        where = f"{name}{pytree.keystr(path)}"
        if isinstance(leaf, Tensor):
            if leaf.dim() == 0 or leaf.shape[0] != rows:
                raise ValueError(f"{where} has shape {list(leaf.shape)}: to batch requests, each tensor in a "
                                 f"condition needs the request's {rows} sample(s) as its first dimension")
            parts.append((str(leaf.dtype), tuple(leaf.shape[1:]), str(leaf.device)))
        else:
            try:
                hash(leaf)
            except TypeError:
                raise TypeError(f"{where} is a {type(leaf).__name__}, which can be neither stacked by rows nor "
                                "compared: give tensors, or hashable values that are equal across a batch") from None
            parts.append(("value", type(leaf).__name__, leaf))
    return str(pytree.treespec_dumps(spec)) if _dumpable(spec) else repr(spec), tuple(parts)


def _dumpable(spec) -> bool:
    try:
        pytree.treespec_dumps(spec)
        return True
    except Exception:  # a custom node type with no serialized form: its repr is the key
        return False


def bucket_key(x: Tensor, cond: Any, null_cond: Optional[Any]) -> tuple:
    """Requests with equal keys can share a batch: the same sample shape, dtype and device, and
    conditions that stack. A `null_cond` in use must stack with `cond` (they share a forward)."""
    rows = x.shape[0]
    key = _signature(cond, rows, "cond")
    if null_cond is not None and _signature(null_cond, rows, "null_cond") != key:
        raise ValueError("null_cond must have cond's layout (the same keys, tensor shapes past the first "
                         "dimension, dtypes and devices), since their rows share one forward")
    return tuple(x.shape[1:]), x.dtype, x.device, key


def concat_rows(values: Sequence[Any]) -> Any:
    """The conditions stacked along dim 0, leaf by leaf (their layouts match: see `bucket_key`)."""
    if len(values) == 1:
        return values[0]
    flat = [pytree.tree_flatten(v) for v in values]
    spec = flat[0][1]
    leaves = [torch.cat(column) if isinstance(column[0], Tensor) else column[0]
              for column in zip(*(leaves for leaves, _ in flat))]
    return pytree.tree_unflatten(leaves, spec)


def take_rows(value: Any, rows: slice) -> Any:
    """Rows `rows` of every tensor in a condition (views)."""
    return pytree.tree_map(lambda leaf: leaf[rows] if isinstance(leaf, Tensor) else leaf, value)
