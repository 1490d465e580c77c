"""Re-index without downtime: one Milvus collection per corpus version, served through an alias.

Rebuilding the live collection in place (what `build_index` does to a name) leaves readers with nothing, or with a
half-built index, for the length of the build. Instead every corpus gets its own collection `{base}_v{N}`, built and
loaded beside the live one; readers search the alias (`{base}_live` by default), which Milvus resolves to one
collection per request. Only once the new version is loaded and its HNSW recall has been checked against exact
search does the alias move, in one `alter_alias` call, so a reader sees either the old version or the new one, never
a mix or a gap. A version that fails the check is dropped and the live version keeps serving.

Old versions are dropped after the swap, keeping the newest `keep` (the previous one stays by default: rolling back
is one `alter_alias`).

Milvus Lite 3.2 quirks this module works around (real Milvus refuses the first two instead):
  - `drop_collection(alias)` drops the collection the alias points to;
  - dropping a collection silently drops every alias pointing to it;
  - `has_collection(alias)` is True, so `build_index(uri, alias, ...)` would drop the live collection.
So nothing here ever drops by an alias' name, a version that some alias still points to is never dropped, and the
alias may not be named like a version nor like an existing collection.

One publisher per `base` at a time: the version number is read then created, with no lock across processes.

Example:
    publish_version("data/index/milvus.db", "pins", ids, emb, interests, signatures, created_ts)
    # -> {"collection": "pins_v3", "alias": "pins_live", "version": 3, "count": 2000, "recall": 0.994,
    #     "recall_k": 100, "previous": "pins_v2", "dropped": ["pins_v1"]}
    search("data/index/milvus.db", "pins_live", queries, k=10)   # readers only ever name the alias
"""

from __future__ import annotations

import re

import numpy as np

from components.index import milvus
from components.index.client import client_for
from components.index.pins import PinColumns, pin_columns

# Milvus' rule for collection and alias names (it also caps them at 255 characters).
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
# Query noise, relative to the pin's norm: large enough that a query is not its own pin's vector (which HNSW finds
# trivially), small enough that the query stays in that pin's neighbourhood, where retrieval queries land.
QUERY_NOISE = 0.1
# Exact scores are computed [chunk, N] at a time; this bounds that matrix to about 128 MiB of float32.
_EXACT_CELLS = 1 << 25


class RecallCheckFailed(ValueError):
    """The new version's HNSW recall was below the threshold: it was dropped and the alias left where it was."""


def publish_version(
    uri: str,
    base: str,
    pin_ids,
    embeddings,
    interest_ids,
    signatures,
    created_ts,
    *,
    hnsw: dict | None = None,
    metric: str = "IP",
    alias: str | None = None,
    recall_k: int = 100,
    recall_sample: int = 200,
    min_recall: float = 0.95,
    ef: int | None = None,
    keep: int = 2,
    seed: int = 0,
) -> dict:
    """Build the next version of `base`, check its recall, point the alias at it, and drop versions beyond `keep`.

    Args:
        uri, pin_ids, embeddings, interest_ids, signatures, created_ts, hnsw, metric: as for `milvus.build_index`.
        base: collections are named `{base}_v{N}`, N one more than the highest existing.
        alias: what readers search; default `{base}_live`.
        recall_k, recall_sample, ef: the recall check searches `recall_sample` noisy pin vectors for the top
            min(recall_k, N) with HNSW breadth `ef` (default: `milvus.search`'s), against exact search.
        min_recall: the new version must reach this recall (0 < min_recall <= 1) to go live.
        keep: versions left after the swap, the new one included (>= 1).
        seed: the recall check's query sample.

    Returns:
        {"collection", "alias", "version", "count", "recall", "recall_k", "previous", "dropped"}: `previous` is
        the collection the alias pointed to before (None on the first publish), `dropped` the versions removed.

    Raises:
        ValueError: a bad argument, named.
        RecallCheckFailed: recall below `min_recall`; the new collection is gone and the alias unchanged.
    """
    alias = alias if alias is not None else f"{base}_live"
    _check_args(base, alias, recall_k, recall_sample, min_recall, keep)
    pins = pin_columns(pin_ids, embeddings, interest_ids, signatures, created_ts)
    k = min(recall_k, len(pins))
    if ef is not None and ef < k:
        raise ValueError(f"ef must be at least the recall check's k = min(recall_k, pins) = {k}, got {ef}")
    client = client_for(uri)
    if alias in client.list_collections():
        raise ValueError(f"alias {alias!r} is the name of an existing collection at {uri}: choose another alias")

    version = _next_version(uri, base)
    collection = f"{base}_v{version}"
    try:
        rows = milvus.build_index(uri, collection, *_columns(pins), hnsw=hnsw, metric=metric)
        recall = _measured_recall(uri, collection, pins, metric, k, recall_sample, ef, seed)
        if recall < min_recall:
            raise RecallCheckFailed(
                f"recall@{k} of {collection!r} is {recall:.4f}, below min_recall {min_recall}: "
                f"dropped it and left alias {alias!r} where it was"
            )
    except BaseException:
        # A version that is not going live must not linger: it would hold memory and be counted as a version.
        _drop(uri, collection)
        raise

    previous = _swap(uri, alias, collection)
    dropped = _drop_old_versions(uri, base, keep)
    return {
        "collection": collection,
        "alias": alias,
        "version": version,
        "count": rows,
        "recall": recall,
        "recall_k": k,
        "previous": previous,
        "dropped": dropped,
    }


def live_collection(uri: str, alias: str) -> str:
    """The collection `alias` points to at `uri`."""
    client = client_for(uri)
    if alias not in client.list_aliases().get("aliases", []):
        raise ValueError(f"alias {alias!r} does not exist at {uri}: publish a version first")
    return client.describe_alias(alias)["collection_name"]


def versions(uri: str, base: str) -> list[str]:
    """The `{base}_v{N}` collections at `uri`, oldest (lowest N) first."""
    return [f"{base}_v{n}" for n in _version_numbers(uri, base)]


def _check_args(base: str, alias: str, recall_k: int, recall_sample: int, min_recall: float, keep: int) -> None:
    for name, value in (("base", base), ("alias", alias)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise ValueError(
                f"{name} must be a Milvus name (letters, digits and underscores, not starting with a digit), "
                f"got {value!r}"
            )
    if _version_of(alias, base) is not None:
        # build_index on that version would drop whatever the alias points to (see the module docstring).
        raise ValueError(f"alias {alias!r} looks like a version of {base!r}: choose a name not ending in _v<N>")
    for name, value in (("recall_k", recall_k), ("recall_sample", recall_sample), ("keep", keep)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(min_recall, int | float) or not 0 < min_recall <= 1:
        raise ValueError(f"min_recall must be in (0, 1], got {min_recall!r}")


def _version_of(name: str, base: str) -> int | None:
    match = re.fullmatch(rf"{re.escape(base)}_v(\d+)", name)
    return int(match.group(1)) if match else None


def _version_numbers(uri: str, base: str) -> list[int]:
    # list_collections names real collections only, never aliases.
    found = (_version_of(name, base) for name in client_for(uri).list_collections())
    return sorted(n for n in found if n is not None)


def _next_version(uri: str, base: str) -> int:
    return max(_version_numbers(uri, base), default=0) + 1


def _columns(pins: PinColumns) -> tuple:
    return pins.pin_ids, pins.embeddings, pins.interest_ids, pins.signatures, pins.created_ts


def _swap(uri: str, alias: str, collection: str) -> str | None:
    """Point `alias` at `collection` in one call; return where it pointed before (None if it did not exist)."""
    client = client_for(uri)
    exists = alias in client.list_aliases().get("aliases", [])
    previous = client.describe_alias(alias)["collection_name"] if exists else None
    if exists:
        client.alter_alias(collection, alias)  # atomic: each request resolves the alias to one collection
    else:
        client.create_alias(collection, alias)
    # This process may have cached the old target's dimension under the alias' name. (A search in another thread
    # that read the old dimension just before the swap can still cache it just after; with a new dimension its
    # caller then gets search's dimension error, not wrong results, until the next publish.)
    milvus.forget(uri, alias)
    return previous


def _drop_old_versions(uri: str, base: str, keep: int) -> list[str]:
    """Drop all but the newest `keep` versions, sparing any that an alias points to (dropping it would drop the
    alias too in Milvus Lite, and is refused by Milvus)."""
    client = client_for(uri)
    dropped = []
    for n in _version_numbers(uri, base)[:-keep]:
        name = f"{base}_v{n}"
        if client.list_aliases(name).get("aliases"):
            continue
        _drop(uri, name)
        dropped.append(name)
    return dropped


def _drop(uri: str, collection: str) -> None:
    client = client_for(uri)
    if collection in client.list_collections():  # never by an alias' name: Lite would drop the alias' target
        client.drop_collection(collection)
    milvus.forget(uri, collection)


def _measured_recall(
    uri: str, collection: str, pins: PinColumns, metric: str, k: int, sample: int, ef: int | None, seed: int
) -> float:
    """Mean fraction of the HNSW top-k that is in the exact top-k, over `sample` noisy pin vectors.

    A hit counts when its exact score reaches the k-th best exact score: pins with identical embeddings (re-pins)
    tie, and whichever of them the index returns is right. Without ties this is |ANN ∩ exact| / k.
    """
    queries = _noisy_queries(pins.embeddings, sample, np.random.default_rng(seed))
    hits = milvus.search(uri, collection, queries, k=k, ef=ef)
    q, emb = _scoring_space(queries, pins.embeddings, metric)
    kth = _kth_best(q, emb, metric, k)
    order = np.argsort(pins.pin_ids)
    per_query = []
    for i, hit_list in enumerate(hits):
        ids = np.unique([h["pin_id"] for h in hit_list])
        rows = order[np.searchsorted(pins.pin_ids, ids, sorter=order)]
        scores = _scores(q[i : i + 1], emb[rows], metric)[0]
        per_query.append(np.sum(scores >= kth[i] - _tolerance(kth[i])) / k)
    return float(np.mean(per_query))


def _noisy_queries(emb: np.ndarray, sample: int, rng: np.random.Generator) -> np.ndarray:
    """Pins' vectors plus gaussian noise of about QUERY_NOISE of their length, rescaled to that length (unit
    vectors stay unit; for L2 a query keeps its pin's norm, as rescaling would change the L2 ranking)."""
    rows = rng.choice(len(emb), size=sample, replace=sample > len(emb))
    base = emb[rows].astype(np.float64)
    norms = np.linalg.norm(base, axis=1, keepdims=True)
    noise = rng.standard_normal(base.shape) * (QUERY_NOISE / np.sqrt(emb.shape[1]))
    # A zero vector gets absolute noise, so the query is still a direction.
    queries = base + noise * np.where(norms > 0, norms, 1.0)
    scale = np.where(norms > 0, norms, 1.0) / np.linalg.norm(queries, axis=1, keepdims=True)
    return (queries * scale).astype(np.float32)


def _scoring_space(queries: np.ndarray, emb: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The vectors exact search compares: COSINE is IP on normalised vectors, as Milvus computes it."""
    q, e = queries.astype(np.float64), emb.astype(np.float64)
    if metric == "COSINE":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return q, e


def _scores(q: np.ndarray, emb: np.ndarray, metric: str) -> np.ndarray:
    """[Q, N] scores where higher is closer: the inner product, or for L2 the negated squared distance less the
    query's own norm (constant per query, so the ranking is L2's)."""
    dots = q @ emb.T
    if metric == "L2":
        return 2 * dots - np.einsum("ij,ij->i", emb, emb)[None, :]
    return dots


def _kth_best(q: np.ndarray, emb: np.ndarray, metric: str, k: int) -> np.ndarray:
    """Each query's k-th best exact score, computed a chunk of queries at a time to bound memory."""
    chunk = max(1, _EXACT_CELLS // max(len(emb), 1))
    out = np.empty(len(q))
    for start in range(0, len(q), chunk):
        scores = _scores(q[start : start + chunk], emb, metric)
        out[start : start + chunk] = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    return out


def _tolerance(score: float) -> float:
    # Milvus scores in float32: allow its rounding, relative to the score's size.
    return 1e-5 * max(1.0, abs(score))
