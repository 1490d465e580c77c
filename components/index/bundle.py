"""The index artifact: where the pin embeddings of one bundle are searched, and how they were built.

    index.json   the IndexBundle below (written by the index step, read by the retrieval predictor)
    milvus.db    the Milvus Lite file, when the index step built one (no `index_uri`)
    corpus/v<N>/ the serving corpus the collection holds (components/index/corpus.py)

`uri` is a Milvus server's http(s) address, or the Lite file's name relative to the index directory (`read` makes
it absolute, so a bundle can move). `search_ef` is the HNSW search breadth the predictor uses (None: milvus.search's
default, max(k, 64)).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from components.artifacts import read_json, write_json

INDEX_FILE = "index.json"
MILVUS_FILE = "milvus.db"
COLLECTION = "pins"


@dataclass(frozen=True)
class IndexBundle:
    uri: str
    collection: str  # what the predictor searches: the alias (a Lite file) or this bundle's version (a server)
    version: str  # the collection version this bundle built, `{collection}_v<N>`
    count: int
    recall_check: dict  # {"recall@K": value} of HNSW against exact search, checked before the alias moved
    dim: int
    metric: str
    hnsw: dict  # build parameters: M, efConstruction
    corpus: dict  # version, as_of_ms, counts (components/index/corpus.py)
    embedding: dict  # engine, workers, batch_size, seconds (components/index/embed.py)
    alias: str | None = None  # a server's alias, for other readers (never searched by this bundle's predictor)
    search_ef: int | None = None
    extra: dict = field(default_factory=dict)  # keys a newer writer added, kept on a round trip

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        for key in ("alias", "search_ef"):
            if out[key] is None:
                del out[key]
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict) -> IndexBundle:
        known = {f.name for f in fields(cls)} - {"extra"}
        missing = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING} - set(data)
        if missing:
            raise ValueError(f"{INDEX_FILE} lacks {sorted(missing)}")
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)

    def write(self, index_dir: Path) -> Path:
        return write_json(index_dir, INDEX_FILE, self.to_json())

    @classmethod
    def read(cls, index_dir: Path) -> IndexBundle:
        """The bundle of `index_dir`, a Milvus Lite file's `uri` made absolute (a server's is left as it is)."""
        index_dir = Path(index_dir)
        bundle = cls.from_json(read_json(index_dir, INDEX_FILE, "index"))
        if "://" not in bundle.uri:
            bundle = replace(bundle, uri=str((index_dir / bundle.uri).resolve()))
        return bundle
