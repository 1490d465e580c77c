"""Reading request bodies: every client mistake becomes `kserve.errors.InvalidInput` (HTTP 400).

Both protocols end as one list of instances (v1 as sent, v2 through serving/v2.py), and a response goes back in the
protocol the request came in. Messages name the instance and the field (`instances[2].user_id: expected an integer
in [0, 300), got 'a'`), so a client with a batch of many instances knows which one to fix. A field the predictor does
not read is an error too, not silently dropped: a misspelt `intrests` would otherwise serve an unfiltered feed. JSON
booleans are not integers here, and neither are floats such as 3.0: an id that arrives as either is a client bug
worth reporting.

A body nested deeper than any predictor reads is a 400 before it is looked at, and values quoted back in a message
are cut to a short, safe summary (serving/bounds.py).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

from serving import v2
from serving.bounds import check_depth, field_name, is_int, summary

MAX_INSTANCES = 256  # users per request: a bigger batch is a client that should split it
# Any non-negative 64-bit id is a well-formed user id: one the model does not know is a new user (cold start), not
# a client mistake.
MAX_USER_ID = 2**63


def parse(payload: Any, schema: v2.Schema) -> tuple[list[dict], bool]:
    """The instances of a v1 body or a v2 request, and whether it was v2."""
    if isinstance(payload, InferRequest):
        found = v2.instances(payload, schema)
        _check_count(len(found), "inputs.user_id")
        return found, True
    return v1_instances(payload, schema.fields), False


def respond(predictions: list[dict], model_name: str, rid: str, as_v2: bool, schema: v2.Schema) -> dict | InferResponse:
    return v2.response(model_name, rid, predictions, schema) if as_v2 else {"predictions": predictions}


def v1_instances(payload: Any, fields: tuple[str, ...]) -> list[dict]:
    """The `instances` of a v1 body: a non-empty list of JSON objects with no field outside `fields`."""
    if isinstance(payload, bytes | bytearray):
        # kserve hands over the raw body when the request has no JSON content type (curl -d without -H): read it
        # as JSON all the same, so the answer is about the body, not the header
        with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):  # not JSON: named below
            payload = json.loads(payload)
    check_depth(payload, "body")
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput(f'instances: missing; expected a JSON object {{"instances": [...]}}, got {summary(payload)}')
    extra = sorted(set(payload) - {"instances"})
    if extra:
        raise InvalidInput(f"{extra[0]}: unknown field; a v1 body holds only `instances`")
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidInput(f"instances: expected a non-empty list of objects, got {summary(instances)}")
    _check_count(len(instances), "instances")
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise InvalidInput(f"instances[{i}]: expected an object, got {summary(instance)}")
        unknown = [k for k in instance if k not in fields]
        if unknown:
            raise InvalidInput(
                f"instances[{i}].{field_name(unknown[0])}: unknown field; expected some of {', '.join(fields)}"
            )
    return instances


def _check_count(n: int, where: str) -> None:
    if n > MAX_INSTANCES:
        raise InvalidInput(f"{where}: {n} users in one request, at most {MAX_INSTANCES}; split the batch")


def integer(instance: dict, index: int, name: str, lo: int, hi: int, default: int | None = None) -> int:
    """`instance[name]` as an int in [lo, hi); `default` when absent (absent and no default is an error)."""
    value = instance.get(name, default)
    if value is None:
        raise InvalidInput(f"instances[{index}].{name}: required, expected an integer in [{lo}, {hi})")
    if not is_int(value) or not lo <= value < hi:
        raise InvalidInput(f"instances[{index}].{name}: expected an integer in [{lo}, {hi}), got {summary(value)}")
    return int(value)


def integer_list(instance: dict, index: int, name: str, lo: int, hi: int, max_len: int) -> list[int]:
    """`instance[name]` as a non-empty list of at most `max_len` distinct ints in [lo, hi)."""
    values = instance.get(name)
    where = f"instances[{index}].{name}"
    if not isinstance(values, list) or not 0 < len(values) <= max_len:
        raise InvalidInput(f"{where}: expected a list of 1 to {max_len} integers, got {summary(values)}")
    for j, value in enumerate(values):
        if not is_int(value) or not lo <= value < hi:
            raise InvalidInput(f"{where}[{j}]: expected an integer in [{lo}, {hi}), got {summary(value)}")
    if len(set(values)) < len(values):
        repeated = sorted(v for v, times in Counter(values).items() if times > 1)
        raise InvalidInput(f"{where}: expected distinct ids, got {repeated} more than once")
    return [int(v) for v in values]
