"""What the predictors tell operators: Prometheus metrics per stage, and one log line per request with its id.

Metrics (on the model server's own `GET /metrics`, beside KServe's request histograms):
    homefeed_stage_seconds{model, stage}        histogram; stages: features (Feast online read), tower (user tower),
                                                ann (Milvus searches), rank (the ranking forward pass), upstream
                                                (the homefeed's calls to retrieval and ranking)
    homefeed_answers_total{model, mode}         users answered, by mode: personalized, cold_start, degraded
    homefeed_dependency_failures_total{model, dependency}   feast / milvus / retrieval / ranking calls that failed
                                                and were answered by a fallback

Request ids: the `x-request-id` header when the caller sent one (KServe's ingress and the homefeed forward it), the
v2 request's `id` otherwise, else a fresh one; one longer than MAX_REQUEST_ID characters is a 400 (it is echoed
back and logged, so a 10 MB id would be copied twice). Every log line of a request carries it, so one homefeed request can
be followed through the three servers' logs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import uuid
from collections import Counter as Tally
from collections.abc import Iterator

from kserve.errors import InvalidInput
from prometheus_client import Counter, Histogram

REQUEST_ID = "x-request-id"
MAX_REQUEST_ID = 128
MODES = ("personalized", "cold_start", "degraded")
# 0.5 ms to 10 s: a ranking pass on a GPU is sub-millisecond, a homefeed over two hops on CPU is tens to hundreds
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

STAGE_SECONDS = Histogram(
    "homefeed_stage_seconds", "Time spent in one stage of a request", ["model", "stage"], buckets=_BUCKETS
)
ANSWERS = Counter("homefeed_answers", "Users answered, by how they were answered", ["model", "mode"])
DEPENDENCY_FAILURES = Counter(
    "homefeed_dependency_failures", "Calls to a dependency that failed and fell back", ["model", "dependency"]
)

log = logging.getLogger("homefeed.serving")


def configure_logging(level: int = logging.INFO) -> None:
    """One stderr handler for the predictors' logger (KServe configures only its own); idempotent."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level)


def request_id(headers: dict[str, str] | None, payload=None) -> str:
    """The caller's request id (header, then a v2 body's `id`), else a new one; InvalidInput (400) when too long."""
    given = next((v for k, v in (headers or {}).items() if k.lower() == REQUEST_ID and v), None)
    given = given or getattr(payload, "id", None)
    if not given:
        return uuid.uuid4().hex
    if len(str(given)) > MAX_REQUEST_ID:
        raise InvalidInput(f"request id: {len(str(given))} characters, at most {MAX_REQUEST_ID}")
    return str(given)


@contextlib.contextmanager
def stage(model: str, name: str) -> Iterator[None]:
    """Time the block into homefeed_stage_seconds{model, stage=name} (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(model, name).observe(time.perf_counter() - start)


def dependency_failed(model: str, dependency: str, rid: str, exc: BaseException) -> None:
    """Count and log a failed call that a fallback answers; the traceback goes to the log, not to the client."""
    DEPENDENCY_FAILURES.labels(model, dependency).inc()
    log.warning("request_id=%s model=%s %s unavailable, falling back: %s: %s", rid, model, dependency,
                type(exc).__name__, exc, exc_info=exc)  # fmt: skip


def answered(model: str, rid: str, modes: list[str], started: float, **fields) -> None:
    """Count the users of a request by mode and write the request's log line."""
    counts = Tally(modes)
    for mode, n in counts.items():
        ANSWERS.labels(model, mode).inc(n)
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    summary = ",".join(f"{m}:{n}" for m, n in sorted(counts.items()))
    ms = (time.perf_counter() - started) * 1000
    log.info("request_id=%s model=%s users=%d modes=%s ms=%.1f %s", rid, model, len(modes), summary, ms, extra)
