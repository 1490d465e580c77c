"""The homefeed predictor: retrieval, then ranking, over their REST v1 endpoints; the N best pins per user.

Request (KServe v1, `POST /v1/models/homefeed:predict`):
    {"instances": [{"user_id": 7, "n": 10}]}      `n` defaults to 10, at most the candidate count.
Response:
    {"predictions": [{"user_id": 7, "candidates": 200, "hidden_excluded": 1, "unscored": 0,
                      "pins": [{"pin_id", "score", "click", "repin", "hide", "interest_id", "source"}, ...]}]}
    `pins`: the N best distinct pins by ranking score (fewer only when fewer candidates could be scored);
    `interest_id` and `source` come from retrieval, the scores from ranking. `candidates` and `hidden_excluded` are
    retrieval's figures for the user, `unscored` the candidates ranking had no online features for.

Both upstream calls carry every instance of the request (one batch each). Errors keep their meaning across the hop:
an upstream 400 (say, an unknown user) is this request's 400 with the upstream message, which names the same
instance index because instances are forwarded in order; an upstream that is unreachable, missing or failing is a
server-side error (HTTP 500), never the client's.
"""

from __future__ import annotations

from http import HTTPStatus

import httpx
import kserve
from kserve.errors import InferenceError, InvalidInput
from kserve.model import append_forwardable_headers

from serving.payload import integer, v1_instances

DEFAULT_CANDIDATES = 200
DEFAULT_N = 10
MAX_USER_ID = 2**63  # the upstream predictors know the real range and answer 400 outside it


class HomefeedPredictor(kserve.Model):
    def __init__(
        self,
        retrieval_url: str,
        ranking_url: str,
        candidates: int = DEFAULT_CANDIDATES,
        timeout_s: float = 30.0,
        name: str = "homefeed",
    ):
        super().__init__(name)
        if not 1 <= candidates <= 1000:
            raise ValueError(f"candidates must be in [1, 1000] (retrieval's k), got {candidates}")
        self.retrieval_url, self.ranking_url = retrieval_url.rstrip("/"), ranking_url.rstrip("/")
        self.candidates = candidates
        self.timeout_s = timeout_s

    def load(self) -> bool:
        # Ready does not wait for the upstream servers: each has its own probe, and a homefeed that refused to start
        # while one restarts would turn a brief outage into a restart loop.
        self.ready = True
        return self.ready

    async def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        requests = [
            (integer(inst, i, "user_id", 0, MAX_USER_ID), integer(inst, i, "n", 1, self.candidates + 1, DEFAULT_N))
            for i, inst in enumerate(v1_instances(payload, self.name))
        ]
        forward = append_forwardable_headers(headers, {"content-type": "application/json"})
        # A client per request: an AsyncClient is bound to the event loop it first runs on, and a model can be
        # called from more than one loop (the server's, a test client's).
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=forward) as client:
            retrieval_body = {"instances": [{"user_id": u, "k": self.candidates} for u, _ in requests]}
            retrieved = await _predict(client, self.retrieval_url, "retrieval", retrieval_body)
            with_candidates = [i for i, found in enumerate(retrieved) if found["candidates"]]
            ranking_body = {
                "instances": [
                    {"user_id": requests[i][0], "candidates": [c["pin_id"] for c in retrieved[i]["candidates"]]}
                    for i in with_candidates
                ]
            }
            ranked = await _predict(client, self.ranking_url, "ranking", ranking_body) if with_candidates else []
        ranked_of = {i: r for i, r in zip(with_candidates, ranked, strict=True)}
        empty = {"scores": [], "unscored": []}
        return {
            "predictions": [
                _feed(user_id, n, retrieved[i], ranked_of.get(i, empty)) for i, (user_id, n) in enumerate(requests)
            ]
        }


async def _predict(client: httpx.AsyncClient, base_url: str, model: str, body: dict) -> list[dict]:
    url = f"{base_url}/v1/models/{model}:predict"
    try:
        response = await client.post(url, json=body)
    except httpx.HTTPError as exc:  # refused, reset, timed out: the upstream is not answering
        raise InferenceError(f"{model} at {url} is unreachable: {type(exc).__name__}: {exc}") from exc
    if response.is_success:
        return response.json()["predictions"]
    message = _error_message(response)
    # 404 means the URL names no such model: a deployment mistake, not the client's
    if response.is_client_error and response.status_code != HTTPStatus.NOT_FOUND:
        raise InvalidInput(f"{model} rejected the request: {message}")
    raise InferenceError(f"{model} at {url} answered HTTP {response.status_code}: {message}")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)


def _feed(user_id: int, n: int, retrieved: dict, ranked: dict) -> dict:
    found = {c["pin_id"]: c for c in retrieved["candidates"]}
    pins = [
        {**s, "interest_id": found[s["pin_id"]]["interest_id"], "source": found[s["pin_id"]]["source"]}
        for s in ranked["scores"][:n]
    ]
    return {
        "user_id": user_id,
        "pins": pins,
        "candidates": len(found),
        "hidden_excluded": retrieved["hidden_excluded"],
        "unscored": len(ranked["unscored"]),
    }
