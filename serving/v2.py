"""The open inference protocol (KServe v2, `POST /v2/models/<name>/infer`) on top of the v1 instances.

A v2 request is a set of named tensors. Row i of every input is instance i, so a v2 request becomes the same list of
instances a v1 body holds and goes through the same validation (errors name `instances[i].<field>`, i being the
row), the same code and the same response, which is then laid out as tensors:

    inputs   per-user integers: INT64 [B], or [1] to give every row the same value (say, `k`);
             per-user id lists (`interests`, `candidates`): INT64 [B, m], rows right-padded with -1.
    outputs  per-user values: [B] (INT64, FP32, or BYTES for strings such as `mode`);
             the per-user list (retrieval's candidates, ranking's scores, the homefeed's pins): one [B, m] tensor per
             column, named after it, m the longest list, padded with -1 (INT64), 0 (FP32) or "" (BYTES), and
             `<list>_count` INT64 [B], each row's length (JSON has no NaN to pad floats with);
             per-user id lists (`unscored`): INT64 [B, m], -1 padded.

Example (retrieval):
    {"inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [7, 9]},
                {"name": "k", "shape": [1], "datatype": "INT64", "data": [50]}]}
    -> outputs pin_id [2, 50], score [2, 50], ..., source [2, 50], candidates_count [2], user_id [2], mode [2], ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving.bounds import check_depth, field_name, is_int, summary

PAD = -1
_DTYPES = {
    name: np.dtype(name.lower()) for name in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
}
_INTEGER_TYPES = set(_DTYPES)
_FILL = {"INT64": PAD, "FP32": 0.0, "BYTES": ""}


@dataclass(frozen=True)
class Schema:
    """A predictor's fields: `scalars` and `lists` are the instance fields (both protocols), `table` the per-user
    list of each prediction with its `columns`, `values` the other per-user prediction fields (name -> datatype)."""

    scalars: tuple[str, ...]
    lists: tuple[str, ...]
    table: str
    columns: dict[str, str]
    values: dict[str, str]

    @property
    def fields(self) -> tuple[str, ...]:
        return self.scalars + self.lists


def instances(request: InferRequest, schema: Schema) -> list[dict]:
    """The v1 instances of a v2 request; InvalidInput (400) for an unknown, mistyped or misshapen input."""
    given = {}
    for tensor in request.inputs:
        if tensor.name not in schema.fields:
            raise InvalidInput(
                f"inputs.{field_name(tensor.name)}: unknown input; expected some of {', '.join(schema.fields)}"
            )
        if tensor.name in given:
            raise InvalidInput(f"inputs.{tensor.name}: given more than once")
        if tensor.datatype not in _INTEGER_TYPES:
            raise InvalidInput(
                f"inputs.{tensor.name}: expected an integer datatype (INT64), got {field_name(tensor.datatype)}"
            )
        given[tensor.name] = _integers(tensor)
    rows = _rows(given, schema)
    out: list[dict] = [{} for _ in range(rows)]
    for name, values in given.items():
        if name in schema.scalars:
            if values.ndim != 1 or len(values) not in {1, rows}:
                raise InvalidInput(f"inputs.{name}: expected shape [{rows}] or [1], got {list(values.shape)}")
            for i in range(rows):
                out[i][name] = int(values[i if len(values) == rows else 0])
        else:
            if values.ndim != 2 or len(values) != rows:
                raise InvalidInput(f"inputs.{name}: expected shape [{rows}, m] (rows padded with {PAD}), "
                                   f"got {list(values.shape)}")  # fmt: skip
            for i in range(rows):
                out[i][name] = [int(v) for v in values[i] if v != PAD]
    return out


def _integers(tensor) -> np.ndarray:
    """A tensor's data as int64 of its shape. JSON data must be a flat list of integers, as many as the shape
    holds: numpy would otherwise turn "7", 7.5, true or [[7]] into 7 and the request would be served as if valid
    (v1 refuses them all). Binary data (the request's raw tail) is read as its datatype says."""
    where, shape = f"inputs.{tensor.name}", list(tensor.shape)
    if not all(is_int(d) and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: shape must be non-negative integers, got {shape}")
    if tensor._raw_data is None:  # kserve has no public accessor for "came as JSON"
        data = tensor.data
        check_depth(data, where)
        if not isinstance(data, list) or not all(is_int(v) for v in data):
            bad = next(v for v in data if not is_int(v)) if isinstance(data, list) else data
            raise InvalidInput(f"{where}: data must be a flat list of integers, got {summary(bad)}")
        if len(data) != math.prod(shape):
            raise InvalidInput(f"{where}: shape {shape} holds {math.prod(shape)} values, data has {len(data)}")
        info = np.iinfo(_DTYPES[tensor.datatype])
        lo, hi = info.min, min(info.max, np.iinfo(np.int64).max)
        out_of_range = next((v for v in data if not lo <= v <= hi), None)
        if out_of_range is not None:
            raise InvalidInput(f"{where}: {summary(out_of_range)} is out of range for {tensor.datatype}")
        return np.asarray(data, dtype=np.int64).reshape(shape)
    try:
        return np.asarray(tensor.as_numpy()).astype(np.int64)
    except (ValueError, TypeError, OverflowError) as exc:  # numpy: OverflowError for -1 as UINT8, 2**64 as UINT64
        raise InvalidInput(f"{where}: data does not fit {tensor.datatype} of shape {shape}: {exc}") from exc


def _rows(given: dict[str, np.ndarray], schema: Schema) -> int:
    """The batch size: the length of the key input (the first scalar field, `user_id`), which is required."""
    key = schema.scalars[0]
    if key not in given:
        raise InvalidInput(f"inputs.{key}: required, an INT64 tensor of shape [B] (one row per user)")
    if given[key].ndim != 1 or len(given[key]) == 0:
        raise InvalidInput(f"inputs.{key}: expected shape [B] with B >= 1, got {list(given[key].shape)}")
    return len(given[key])


def response(model_name: str, request_id: str, predictions: list[dict], schema: Schema) -> InferResponse:
    """The predictions (v1 layout) as v2 output tensors."""
    rows = len(predictions)
    outputs = []
    width = max((len(p[schema.table]) for p in predictions), default=0)
    for column, datatype in schema.columns.items():
        data = [[item[column] for item in p[schema.table]] for p in predictions]
        outputs.append(_padded(column, datatype, data, rows, width))
    outputs.append(
        InferOutput(f"{schema.table}_count", [rows], "INT64", data=[len(p[schema.table]) for p in predictions])
    )
    for name, datatype in schema.values.items():
        values = [p[name] for p in predictions]
        if values and isinstance(values[0], list):  # a per-user id list
            outputs.append(_padded(name, datatype, values, rows, max(len(v) for v in values)))
        else:
            outputs.append(InferOutput(name, [rows], datatype, data=[_plain(v, datatype) for v in values]))
    return InferResponse(request_id, model_name, outputs)


def _padded(name: str, datatype: str, lists: list[list], rows: int, width: int) -> InferOutput:
    fill = _FILL[datatype]
    flat = [_plain(v, datatype) for row in lists for v in (list(row) + [fill] * (width - len(row)))]
    return InferOutput(name, [rows, width], datatype, data=flat)


def _plain(value, datatype: str):
    if datatype == "BYTES":
        return "" if value is None else str(value)
    if datatype == "FP32":  # None: a head the homefeed's degraded answer has no probability for
        return 0.0 if value is None else float(value)
    return int(value)
