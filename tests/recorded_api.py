"""A loopback HTTP server that replays scripted API responses, for testing cluster code with the real client libraries.

There is no Kubernetes API server or Kubeflow Pipelines server in CI, but mocking `kubernetes.client` or `kfp.Client`
would only test our guesses about those libraries. Instead the real clients talk HTTP to `RecordedAPI`, which answers
from a script of exchanges (method, path, response) and records every request it received, so a test can assert what
the client actually put on the wire: the body, the content type, the query.

The script is strict and ordered: each request must match the next unused exchange. Anything else is answered with a
loud 501 (naming the method and path) and recorded as unexpected, so `assert_all_used()` fails with a clear message
even when the client under test swallowed the error.

Also here, because the KubeRay, the KServe and the manifest tests need it: `crd_validator` and
`vendored_crd_validator`, which turn an upstream CRD's openAPIV3Schema (from a CRD file, or from the copy vendored in
tests/fixtures/crds) into a jsonschema validator, to check sent bodies, fixture bodies and manifests against the real
schema.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "recorded"
CRD_SCHEMAS = Path(__file__).resolve().parent / "fixtures" / "crds"


def load_fixture(name: str) -> Any:
    """The JSON body stored as `tests/fixtures/recorded/<name>.json` (`name` is e.g. "kuberay/rayjob_running")."""
    path = FIXTURES / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"recorded fixture {name!r} not found: expected {path}")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Exchange:
    """One scripted request/response pair.

    `path` is an exact path or a compiled regex (matched against the whole path). `query` None ignores the query
    string; a dict must equal the request's parameters exactly (single-valued, blank values kept).
    """

    method: str
    path: str | re.Pattern[str]
    status: int = 200
    body: Any = None
    query: dict[str, str] | None = None
    # What the real server would also do when it gets this request (e.g. the cluster running a submitted job),
    # called with the request before the response is sent.
    effect: Callable[[Request], None] | None = None

    def matches(self, method: str, path: str, query: dict[str, str]) -> bool:
        if method != self.method.upper():
            return False
        if isinstance(self.path, re.Pattern):
            if not self.path.fullmatch(path):
                return False
        elif path != self.path:
            return False
        return self.query is None or self.query == query

    def describe(self) -> str:
        path = self.path.pattern if isinstance(self.path, re.Pattern) else self.path
        return f"{self.method.upper()} {path}" + (f" ?{self.query}" if self.query is not None else "")


def reply(
    method: str,
    path: str | re.Pattern[str],
    *,
    status: int = 200,
    body: Any = None,
    fixture: str | None = None,
    query: dict[str, str] | None = None,
    effect: Callable[[Request], None] | None = None,
) -> Exchange:
    """An exchange answered with `body`, or with the stored fixture `fixture` (one of the two, or neither: `{}`)."""
    if body is not None and fixture is not None:
        raise ValueError(f"{method} {path}: give either body or fixture, not both")
    payload = load_fixture(fixture) if fixture is not None else ({} if body is None else body)
    return Exchange(method.upper(), path, status, payload, query, effect)


def replies(
    method: str,
    path: str | re.Pattern[str],
    fixtures: Iterable[str],
    *,
    status: int = 200,
    query: dict[str, str] | None = None,
) -> list[Exchange]:
    """The same request answered once per fixture, in order: a polled resource moving through its states."""
    return [reply(method, path, status=status, fixture=name, query=query) for name in fixtures]


@dataclass
class Request:
    """A request as the server received it. `body` is the parsed JSON, or the raw text when it is not JSON."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    expected: bool = True

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class RecordedAPI:
    """Serve `script` on 127.0.0.1 at a free port while the context is open; `url` is its base URL."""

    def __init__(self, script: Iterable[Exchange | Iterable[Exchange]] = ()) -> None:
        # Accept nested lists so `replies(...)` can sit among single `reply(...)` entries.
        self.script: list[Exchange] = list(_flatten(script))
        self.requests: list[Request] = []
        self._next = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("RecordedAPI is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RecordedAPI:
        handler = type("_Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, and every test closes a server.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="recorded-api", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        """Match a request against the next scripted exchange; record it either way. Returns (status, body)."""
        with self._lock:
            nxt = self.script[self._next] if self._next < len(self.script) else None
            expected = nxt is not None and nxt.matches(method, path, query)
            request = Request(method, path, query, headers, body, expected)
            self.requests.append(request)
            if expected:
                self._next += 1
        if expected:
            if nxt.effect is not None:
                nxt.effect(request)  # outside the lock: an effect may take a while, and requests may come meanwhile
            return nxt.status, nxt.body
        wanted = nxt.describe() if nxt is not None else "nothing (the script is used up)"
        message = f"RecordedAPI: unexpected request {method} {path} query={query}; the script expected {wanted}"
        # Shaped like a Kubernetes Status and a grpc-gateway error at once, so either client surfaces the message.
        return 501, {"kind": "Status", "status": "Failure", "code": 501, "reason": "NotImplemented", "message": message}

    @property
    def unexpected(self) -> list[Request]:
        return [r for r in self.requests if not r.expected]

    @property
    def remaining(self) -> list[Exchange]:
        return self.script[self._next :]

    def assert_all_used(self) -> None:
        """Fail unless every scripted exchange was consumed, in order, and nothing unscripted arrived."""
        problems = [f"unexpected request: {r.method} {r.path} query={r.query}" for r in self.unexpected]
        problems += [f"never requested: {e.describe()}" for e in self.remaining]
        if problems:
            raise AssertionError("RecordedAPI script mismatch:\n  " + "\n  ".join(problems))

    def sent(self, method: str, path: str | None = None) -> list[Request]:
        """The received requests with this method (and exact path, when given), in arrival order."""
        return [r for r in self.requests if r.method == method.upper() and (path is None or r.path == path)]


class _Handler(BaseHTTPRequestHandler):
    api: RecordedAPI
    # HTTP/1.1 keeps the clients' pooled connections alive between polls, as a real API server does.
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            text = raw.decode("utf-8", errors="replace")
            try:
                body = json.loads(text)
            except json.JSONDecodeError:
                body = text
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload = self.api.answer(self.command, parts.path, query, headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        # Requests are recorded on the RecordedAPI; stderr lines would only clutter pytest's output.
        pass


def _flatten(items: Iterable[Exchange | Iterable[Exchange]]) -> Iterator[Exchange]:
    for item in items:
        if isinstance(item, Exchange):
            yield item
        else:
            yield from _flatten(item)


def crd_validator(crd_path: Path, version: str):
    """A jsonschema validator for the custom resource `version` of the CRD file at `crd_path` (see `schema_validator`)."""
    # The KServe CRD is some 40k lines; the C loader reads it several times faster when libyaml is there.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_path.read_text(), Loader=loader)  # noqa: S506 - a safe loader either way
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    if version not in versions:
        raise KeyError(f"{crd_path.name} has no version {version!r} (it has {sorted(versions)})")
    return schema_validator(versions[version]["schema"]["openAPIV3Schema"])


def vendored_crd_validator(crd_file: str, version: str):
    """The validator for `version` of the upstream CRD `crd_file` (e.g. "ray.io_rayjobs.yaml"), from the schema
    vendored under tests/fixtures/crds (SOURCES.md there says where each comes from; extract.py redoes them)."""
    path = CRD_SCHEMAS / f"{crd_file.removesuffix('.yaml')}.{version}.schema.json.gz"
    if not path.is_file():
        vendored = sorted(p.name for p in CRD_SCHEMAS.glob("*.schema.json.gz"))
        raise FileNotFoundError(f"no vendored schema for {crd_file} {version}: expected {path} (have {vendored})")
    return schema_validator(json.loads(gzip.decompress(path.read_bytes())))


def schema_validator(openapi_schema: dict[str, Any]):
    """A jsonschema validator for a CRD version's openAPIV3Schema, closed against unknown fields.

    The API server prunes fields its structural schema does not declare, so a misspelt field is silently dropped
    rather than rejected. To catch that here, every object schema that lists `properties` (and neither allows extra
    keys nor sets `x-kubernetes-preserve-unknown-fields`) is closed with `additionalProperties: false`. `nullable` is
    translated; `x-kubernetes-int-or-string` gets its `anyOf` when the CRD left it out; other `x-kubernetes-*` keys are
    annotations jsonschema ignores.
    """
    import jsonschema

    schema = _strict(openapi_schema)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    # Walk schema positions only (not every dict): a field may well be named "nullable" or "properties".
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_strict(sub) for sub in out[key]]
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig whose current context talks to `server` (a RecordedAPI's url): for code that finds its API
    server the way it would outside a pod, through $KUBECONFIG."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "recorded", "cluster": {"server": server}}],
        "users": [{"name": "recorded", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "recorded", "context": {"cluster": "recorded", "user": "recorded"}}],
        "current-context": "recorded",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


class FakeTime:
    """An injectable clock and sleep for polling code: sleeping advances the clock instantly and is logged."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
