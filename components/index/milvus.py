"""Build, search and count the pin collection in Milvus.

Schema: `pin_id` (INT64 primary key), `embedding` (FLOAT_VECTOR, d from the data), `interest_id` (INT64, the
partition key), `image_signature` (INT64, the coarse image signature used for dedup), `created_ts` (INT64 epoch ms).

The partition key: Milvus hashes `interest_id` into a fixed set of partitions, and a search whose filter names
interests (`interest_id in [...]`) only visits the partitions those interests hash to. That is how conditional
retrieval asks for "pins of these interests" without one collection per interest. Milvus Lite 3.2 implements the
partition key the same way (16 hash buckets) but applies the filter inside each bucket's index rather than pruning
buckets, so on a laptop the filter is honoured but does not make the search cheaper.

The index is HNSW: Milvus Lite 3.2 builds it with faiss (faiss-cpu is a milvus-lite dependency, pinned in the
lock), so the same index type and parameters (`M`, `efConstruction`, search-time `ef`) mean the same thing locally
and on a cluster.

Example:
    ids, emb = pins.pin_id.to_numpy(), np.stack(pins.embedding.to_numpy())
    build_index("data/index/milvus.db", "pins", ids, emb, pins.interest_id, pins.image_signature_coarse,
                pins.created_ts)                                  # -> len(pins)
    search("data/index/milvus.db", "pins", emb[:2], k=10, interests=[4])
    # -> 2 lists of 10 {"pin_id", "score", "interest_id": 4, "image_signature"}, best first
"""

from __future__ import annotations

import numpy as np
from pymilvus import DataType, MilvusClient

from components.index.client import client_for, forget_client
from components.index.pins import PinColumns, embedding_matrix, pin_columns

METRICS = ("IP", "COSINE", "L2")
HNSW_DEFAULTS = {"M": 16, "efConstruction": 200}
DEFAULT_EF = 64
INSERT_BATCH = 1000
_OUTPUT_FIELDS = ["interest_id", "image_signature"]

# (uri, collection) -> embedding dimension, for collections this process built or loaded. Saves a describe and a
# load-state round trip on every search. A collection released or rebuilt elsewhere, or a server restarted, is not
# seen here until a search fails: the failure forgets the entry (and the client), and the next search loads again.
_ready: dict[tuple[str, str], int] = {}


def build_index(
    uri: str,
    collection: str,
    pin_ids,
    embeddings,
    interest_ids,
    signatures,
    created_ts,
    hnsw: dict | None = None,
    metric: str = "IP",
) -> int:
    """(Re)create `collection` at `uri` from N pins, index it with HNSW, load it, and return Milvus' row count.

    Args:
        uri: a Milvus Lite path ending in `.db` (its folder is created), or `http://host:port`.
        collection: dropped first if it exists, so a rebuild never mixes two corpora.
        pin_ids, interest_ids, signatures, created_ts: [N] integers (pin_ids unique).
        embeddings: [N, d] float32.
        hnsw: `M` and/or `efConstruction` (defaults 16 and 200).
        metric: "IP" (default; the towers emit unit vectors, so IP is cosine), "COSINE" or "L2".
    """
    pins = pin_columns(pin_ids, embeddings, interest_ids, signatures, created_ts)
    build_params = _hnsw_params(hnsw)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    client = client_for(uri)
    _ready.pop((uri, collection), None)
    if client.has_collection(collection):
        client.drop_collection(collection)
    client.create_collection(collection, schema=_schema(pins.dim))
    _insert(client, collection, pins)
    index = client.prepare_index_params()
    index.add_index(field_name="embedding", index_type="HNSW", metric_type=metric, params=build_params)
    # Indexing after the bulk insert builds each sealed segment's graph once, instead of indexing growing segments.
    client.create_index(collection, index)
    client.load_collection(collection)
    _ready[(uri, collection)] = pins.dim
    return count(uri, collection)


def search(
    uri: str,
    collection: str,
    queries,
    k: int,
    interests: list[int] | None = None,
    ef: int | None = None,
    timeout: float | None = None,
) -> list[list[dict]]:
    """Top-`k` pins for each of Q query vectors, best first.

    Args:
        queries: [Q, d] float32, d equal to the collection's embedding dimension.
        interests: when given, only pins of these interests are returned (and Milvus prunes partitions by them).
        ef: HNSW search breadth, >= k; default max(k, 64). Larger is slower and closer to exact.
        timeout: seconds before the call fails (pymilvus' own retries included); None waits as pymilvus does.

    Returns:
        Q lists of {"pin_id", "score", "interest_id", "image_signature"}. `score` is Milvus' distance for the
        collection's metric: the inner product (higher is closer) for IP and COSINE, the L2 distance for L2.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if ef is not None and ef < k:
        raise ValueError(f"ef must be at least k ({k}) for HNSW, got {ef}")
    client = client_for(uri)
    filter_ = _interest_filter(interests)
    try:
        mat = embedding_matrix(queries, "queries", dim=_ensure_loaded(client, uri, collection))
        if len(mat) == 0:
            return []
        hits = client.search(
            collection,
            data=list(mat),
            limit=k,
            anns_field="embedding",
            filter=filter_,
            output_fields=_OUTPUT_FIELDS,
            search_params={"params": {"ef": ef if ef is not None else max(k, DEFAULT_EF)}},
            timeout=timeout,
        )
    except Exception:  # any failure talking to Milvus: pymilvus raises its own and grpc's errors
        # The server restarted, or released the collection: forget that it was loaded and the client that saw it,
        # so the next search reconnects and loads again instead of failing until this process restarts.
        _ready.pop((uri, collection), None)
        forget_client(uri)
        raise
    return [
        [
            {
                # the hit's primary key: `hit.id` reads it under the name the server gives it ("pin_id" from
                # Milvus Lite and servers from 2.4, "id" from the 2.3 standalone server)
                "pin_id": int(hit.id),
                "score": float(hit["distance"]),
                "interest_id": int(hit["entity"]["interest_id"]),
                "image_signature": int(hit["entity"]["image_signature"]),
            }
            for hit in per_query
        ]
        for per_query in hits
    ]


def count(uri: str, collection: str) -> int:
    """Rows in `collection` as Milvus counts them: `count(*)`, exact under Strong consistency (deletes included)."""
    client = client_for(uri)
    _ensure_loaded(client, uri, collection)
    rows = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def forget(uri: str, collection: str) -> None:
    """Drop this process' cached dimension for `collection` (or alias): the next search or count re-reads it.

    Needed when the name starts to mean another collection (an alias moved, a collection dropped behind our back):
    the cache would otherwise check queries against the old collection's dimension.
    """
    _ready.pop((uri, collection), None)


def _schema(dim: int):
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pin_id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("interest_id", DataType.INT64, is_partition_key=True)
    schema.add_field("image_signature", DataType.INT64)
    schema.add_field("created_ts", DataType.INT64)
    return schema


def _insert(client: MilvusClient, collection: str, pins: PinColumns) -> None:
    for rows in pins.batches(INSERT_BATCH):
        client.insert(collection, rows)
    # Seal the segments so the index is built over all rows and the count below sees every insert.
    client.flush(collection)


def _hnsw_params(hnsw: dict | None) -> dict:
    params = dict(HNSW_DEFAULTS)
    unknown = set(hnsw or {}) - set(HNSW_DEFAULTS)
    if unknown:
        raise ValueError(f"hnsw accepts {sorted(HNSW_DEFAULTS)}, got unknown {sorted(unknown)}")
    params.update(hnsw or {})
    for name, value in params.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"hnsw {name} must be a positive integer, got {value!r}")
    return params


def _interest_filter(interests: list[int] | None) -> str:
    if interests is None:
        return ""
    ids = np.asarray(interests)
    if ids.size == 0:
        raise ValueError("interests is empty: pass None to search every interest")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"interests must be a list of integer interest ids, got {interests!r}")
    return f"interest_id in {sorted(set(ids.tolist()))}"


def _ensure_loaded(client: MilvusClient, uri: str, collection: str) -> int:
    """Load `collection` if this process has not yet (Milvus Lite reopens collections released); return its dim."""
    key = (uri, collection)
    if key not in _ready:
        if not client.has_collection(collection):
            raise ValueError(f"collection {collection!r} does not exist at {uri}: build it with build_index first")
        fields = client.describe_collection(collection)["fields"]
        _ready[key] = next(int(f["params"]["dim"]) for f in fields if f["name"] == "embedding")
        client.load_collection(collection)
    return _ready[key]
