"""Reading KServe v1 request bodies: every client mistake becomes `kserve.errors.InvalidInput` (HTTP 400).

Messages name the instance and the field (`instances[2].user_id: expected an integer in [0, 300), got 'a'`), so a
client with a batch of many instances knows which one to fix. JSON booleans are not integers here, and neither are
floats such as 3.0: an id that arrives as either is a client bug worth reporting.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest


def v1_instances(payload: Any, model_name: str) -> list[dict]:
    """The `instances` of a v1 body: a non-empty list of JSON objects."""
    if isinstance(payload, InferRequest):
        raise InvalidInput(
            f"{model_name} speaks the v1 protocol only for now: POST /v1/models/{model_name}:predict with "
            '{"instances": [...]}'
        )
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput(f'instances: missing; expected a JSON object {{"instances": [...]}}, got {_show(payload)}')
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidInput(f"instances: expected a non-empty list of objects, got {_show(instances)}")
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise InvalidInput(f"instances[{i}]: expected an object, got {_show(instance)}")
    return instances


def integer(instance: dict, index: int, name: str, lo: int, hi: int, default: int | None = None) -> int:
    """`instance[name]` as an int in [lo, hi); `default` when absent (absent and no default is an error)."""
    value = instance.get(name, default)
    if value is None:
        raise InvalidInput(f"instances[{index}].{name}: required, expected an integer in [{lo}, {hi})")
    if not _is_int(value) or not lo <= value < hi:
        raise InvalidInput(f"instances[{index}].{name}: expected an integer in [{lo}, {hi}), got {_show(value)}")
    return int(value)


def integer_list(instance: dict, index: int, name: str, lo: int, hi: int, max_len: int) -> list[int]:
    """`instance[name]` as a non-empty list of at most `max_len` distinct ints in [lo, hi)."""
    values = instance.get(name)
    where = f"instances[{index}].{name}"
    if not isinstance(values, list) or not 0 < len(values) <= max_len:
        raise InvalidInput(f"{where}: expected a list of 1 to {max_len} integers, got {_show(values)}")
    for j, value in enumerate(values):
        if not _is_int(value) or not lo <= value < hi:
            raise InvalidInput(f"{where}[{j}]: expected an integer in [{lo}, {hi}), got {_show(value)}")
    if len(set(values)) < len(values):
        repeated = sorted(v for v, times in Counter(values).items() if times > 1)
        raise InvalidInput(f"{where}: expected distinct ids, got {repeated} more than once")
    return [int(v) for v in values]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
