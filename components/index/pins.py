"""The pin columns that go into the index, checked before anything reaches Milvus.

Milvus would reject some of these problems itself, but with a message about a field in a batch; checking up front
names the argument and the row, and nothing is half-inserted when the input is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinColumns:
    """Aligned columns of N pins. `embeddings` is [N, d] float32; the others are [N] int64."""

    pin_ids: np.ndarray
    embeddings: np.ndarray
    interest_ids: np.ndarray
    signatures: np.ndarray
    created_ts: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.pin_ids)

    def batches(self, size: int) -> Iterator[list[dict]]:
        """Rows as Milvus insert dicts, `size` at a time (one large insert would exceed gRPC's message limit)."""
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            yield [
                {
                    "pin_id": int(self.pin_ids[i]),
                    "embedding": self.embeddings[i],
                    "interest_id": int(self.interest_ids[i]),
                    "image_signature": int(self.signatures[i]),
                    "created_ts": int(self.created_ts[i]),
                }
                for i in range(start, stop)
            ]


def pin_columns(pin_ids, embeddings, interest_ids, signatures, created_ts) -> PinColumns:
    """Check and convert the build_index inputs; raises ValueError naming the argument (and row) at fault."""
    emb = embedding_matrix(embeddings, "embeddings")
    n = emb.shape[0]
    if n == 0:
        raise ValueError("embeddings is empty: an index needs at least one pin")
    ints = {
        name: _int_column(values, name, n)
        for name, values in (
            ("pin_ids", pin_ids),
            ("interest_ids", interest_ids),
            ("signatures", signatures),
            ("created_ts", created_ts),
        )
    }
    ids = ints["pin_ids"]
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1]
        raise ValueError(f"pin_ids must be unique (they are the primary key); repeated: {dup[:5].tolist()}")
    return PinColumns(ids, emb, ints["interest_ids"], ints["signatures"], ints["created_ts"])


def embedding_matrix(values, name: str, dim: int | None = None) -> np.ndarray:
    """`values` as a C-contiguous [N, d] float32 matrix of finite numbers (d == `dim` when given)."""
    try:
        mat = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric [N, d] matrix: {e}") from e
    if mat.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, d] matrix, got shape {mat.shape}")
    if dim is not None and mat.shape[1] != dim:
        raise ValueError(f"{name} have dimension {mat.shape[1]}, but the index stores {dim}-d embeddings")
    bad = ~np.isfinite(mat).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} row {int(np.flatnonzero(bad)[0])} has a NaN or infinite value")
    return np.ascontiguousarray(mat)


def _int_column(values, name: str, n: int) -> np.ndarray:
    col = np.asarray(values)
    if col.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {col.shape}")
    if len(col) != n:
        raise ValueError(f"{name} has {len(col)} values but embeddings has {n} rows: they must align")
    if not np.issubdtype(col.dtype, np.integer):
        raise ValueError(f"{name} must be integers (Milvus INT64), got dtype {col.dtype}")
    return col.astype(np.int64, copy=False)
