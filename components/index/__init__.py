"""The pin index: pin embeddings in Milvus, partitioned by interest, searched with an optional interest filter.

One code path for every deployment: the `uri` picks it. A path ending in `.db` opens Milvus Lite in-process (the
laptop default), `http://host:19530` reaches a `milvus-lite server` or a Milvus cluster.
"""

from components.index.milvus import build_index, count, search

__all__ = ["build_index", "count", "search"]
