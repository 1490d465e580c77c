"""The homefeed predictor: retrieval, then ranking, over their REST v1 endpoints; the N best pins per user.

Request (KServe v1 `POST /v1/models/homefeed:predict`, or v2 `POST /v2/models/homefeed/infer`, serving/v2.py):
    {"instances": [{"user_id": 7, "n": 10, "interests": [3]}]}
    `n` defaults to 10, at most the candidate count; `interests` (optional) is passed to retrieval (a filter for a
    known user, the interests a new user picked for their cold start). `ts` (epoch ms, optional) is the time the
    impressions are logged at, taken only from a server started with `client_time` (a simulation or a backfill
    drives the clock; a production client cannot): elsewhere it is a 400.
Response:
    {"predictions": [{"user_id": 7, "request_id": 4242, "mode": "personalized", "reason": null, "candidates": 200,
                      "hidden_excluded": 1, "unscored": 0,
                      "pins": [{"pin_id", "score", "click", "repin", "hide", "interest_id", "source"}, ...]}]}
    `pins`: the N best distinct pins by ranking score (fewer only when fewer candidates could be scored);
    `interest_id` and `source` come from retrieval, the scores from ranking. `candidates` and `hidden_excluded` are
    retrieval's figures for the user, `unscored` the candidates ranking could not score. `mode` is the weaker of the
    two hops' (degraded over cold_start over personalized) and `reason` joins theirs. `request_id` identifies this
    feed in the event log: its impressions carry it, and a client sends it with the actions taken on the feed
    (serving/actions.py), which is how an action is joined to what was shown.

Both upstream calls carry every instance of the request (one batch each) and the request id (`x-request-id`,
serving/observe.py), so one feed can be followed through the three logs. Errors keep their meaning across the hop:
an upstream 400 (a bad field) is this request's 400 with the upstream message, which names the same instance index
because instances are forwarded in order. A retrieval server that is unreachable, missing or failing is a
server-side error (HTTP 500), never the client's, unless the server holds the serving corpus (`popular`, from
`--index-dir`): then the most popular pins (of the instance's `interests`, if any) stand in for retrieval's
candidates and are ranked as usual, flagged `degraded` (hidden pins cannot be left out: that list is read by
retrieval). A ranking server in that state leaves the feed in retrieval's order, flagged `degraded`, since
retrieval's candidates are already a feed.

Exploration (`explore` > 0, with the serving corpus): a feed's last `explore` slots hold pins of interests drawn at
random, one of the most popular pins of each, ranked with the rest and flagged `source: "explore"`. A model only
learns from what it shows: without such slots a user whose taste moves to interests the feed never shows them has
nothing to engage with there, and the sequences, the logs and every retraining keep the old picture (the live loop's
interest shift, docs/live-loop.md). The draws are seeded by the feed's request id, so a request replays the same.
"""

from __future__ import annotations

import os
import time
from http import HTTPStatus
from typing import Protocol

import httpx
import kserve
import numpy as np
from kserve.errors import InferenceError, InvalidInput
from kserve.model import append_forwardable_headers

from serving import observe
from serving.event_log import EventLog, impressions, request_number
from serving.payload import MAX_USER_ID, integer, integer_list, parse, respond
from serving.v2 import Schema

DEFAULT_CANDIDATES = 200
TOKEN_ENV = "SERVING_TOKEN"  # when set, the bearer token every model server's data plane requires
DEFAULT_N = 10
MAX_INTERESTS = 1000
MAX_TS = 2**53  # epoch ms: any time a JSON number holds exactly
MODES = ("personalized", "cold_start", "degraded")  # weakest last
EXPLORE = "explore"  # the source of an exploration slot's pin
EXPLORE_POOL = 20  # an explored interest's pin is one of its this many most popular
SCHEMA = Schema(
    scalars=("user_id", "n", "ts"),
    lists=("interests",),
    table="pins",
    columns={
        "pin_id": "INT64",
        "score": "FP32",
        "click": "FP32",
        "repin": "FP32",
        "hide": "FP32",
        "interest_id": "INT64",
        "source": "BYTES",
    },  # fmt: skip
    values={
        "user_id": "INT64",
        "request_id": "INT64",
        "mode": "BYTES",
        "reason": "BYTES",
        "candidates": "INT64",
        "hidden_excluded": "INT64",
        "unscored": "INT64",
    },  # fmt: skip
)


class Popular(Protocol):
    """What the homefeed needs of the serving corpus (serving/corpus.py, which brings torch: imported only when a
    server is given an index directory)."""

    def popular(self, k: int, interests: tuple[int, ...] | None = None) -> list[dict]: ...

    def interests(self) -> list[int]: ...


class HomefeedPredictor(kserve.Model):
    def __init__(
        self,
        retrieval_url: str,
        ranking_url: str,
        candidates: int = DEFAULT_CANDIDATES,
        timeout_s: float = 30.0,
        name: str = "homefeed",
        events: EventLog | None = None,
        versions: tuple[str, str] = ("", ""),
        client_time: bool = False,
        popular: Popular | None = None,
        explore: int = 0,
    ):
        """`events`: where every served pin is logged as an impression (serving/event_log.py), None for no logging;
        `versions`: the (model, index) versions the impressions name; `client_time`: take an instance's `ts` as the
        impressions' time (a simulation's clock), else the server's clock and a `ts` is refused; `popular`: the
        serving corpus (serving/corpus.py), whose popular pins stand in for retrieval's while it is down; `explore`:
        the exploration slots per feed (the module docstring), which need `popular`."""
        super().__init__(name)
        if not 1 <= candidates <= 1000:
            raise ValueError(f"candidates must be in [1, 1000] (retrieval's k), got {candidates}")
        if not 0 <= explore <= 10:
            raise ValueError(f"explore must be in [0, 10] slots, got {explore}")
        if explore and popular is None:
            raise ValueError("exploration draws pins from the serving corpus: give the index directory too")
        self.explore = explore
        self.retrieval_url, self.ranking_url = retrieval_url.rstrip("/"), ranking_url.rstrip("/")
        self.candidates = candidates
        self.timeout_s = timeout_s
        self.events, self.versions, self.client_time = events, versions, client_time
        self.popular = popular
        self.token = os.environ.get(TOKEN_ENV)  # the three servers share one token (serving/server.py)

    def load(self) -> bool:
        # Ready does not wait for the upstream servers: each has its own probe, and a homefeed that refused to start
        # while one restarts would turn a brief outage into a restart loop.
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """At the server's shutdown (KServe unloads the model on SIGTERM): publish, or spool to disk, every
        impression still queued, before the process ends."""
        super().stop()
        if self.events is not None:
            self.events.close()

    async def predict(self, payload, headers: dict[str, str] | None = None):
        started, rid = time.perf_counter(), observe.request_id(headers, payload)
        instances, as_v2 = parse(payload, SCHEMA)
        requests = [
            (integer(inst, i, "user_id", 0, MAX_USER_ID), integer(inst, i, "n", 1, self.candidates + 1, DEFAULT_N))
            for i, inst in enumerate(instances)
        ]
        # retrieval knows the interest range and checks it; here only the shape is checked
        interests = [
            integer_list(inst, i, "interests", 0, MAX_USER_ID, MAX_INTERESTS)
            if inst.get("interests") is not None
            else None
            for i, inst in enumerate(instances)
        ]
        times = self._times(instances)
        retrieved, ranked = await self.retrieve_and_rank(requests, interests, headers, rid)
        predictions = [
            {**feed(user_id, n, retrieved[i], ranked[i], self._slots(n)), "request_id": feed_number(rid, i)}
            for i, (user_id, n) in enumerate(requests)
        ]
        if self.events is not None:  # a queue put: the bus is written by the log's own thread
            model, index = self.versions
            for p, ts in zip(predictions, times, strict=True):
                self.events.log(impressions(p, rid, ts, model_version=model, index_version=index))
        observe.answered(self.name, rid, [p["mode"] for p in predictions], started)
        return respond(predictions, self.name, rid, as_v2, SCHEMA)

    def _slots(self, n: int) -> int:
        """Exploration slots of a feed of `n`: never all of it."""
        return min(self.explore, n - 1)

    def _explored(self, rid: str, position: int, found: list[dict], n: int) -> list[dict]:
        """Up to `_slots(n)` exploration candidates for the feed at `position` of request `rid`: each of an interest
        drawn at random (none twice), one of its most popular pins that retrieval did not find already (`found`); an
        interest whose popular pins retrieval found all is one the user is shown anyway, and the next is drawn."""
        slots = self._slots(n)
        rng = np.random.default_rng(feed_number(rid, position))
        taken = {c["pin_id"] for c in found}
        out: list[dict] = []
        for interest in rng.permutation(self.popular.interests()).tolist() if slots else []:
            pool = [h for h in self.popular.popular(EXPLORE_POOL, (interest,)) if h["pin_id"] not in taken]
            if pool:
                pick = pool[int(rng.integers(len(pool)))]
                out.append({**pick, "source": EXPLORE})
                taken.add(pick["pin_id"])
                if len(out) == slots:
                    break
        return out

    def _times(self, instances: list[dict]) -> list[int]:
        """Each instance's impression time (epoch ms): its `ts` with client time, else now."""
        if not self.client_time:
            given = next((i for i, inst in enumerate(instances) if "ts" in inst), None)
            if given is not None:
                raise InvalidInput(
                    f"instances[{given}].ts: this server logs impressions at its own clock (client time is off)"
                )
            return [int(time.time() * 1000)] * len(instances)
        now = int(time.time() * 1000)
        return [integer(inst, i, "ts", 0, MAX_TS, now) for i, inst in enumerate(instances)]

    async def retrieve_and_rank(
        self, requests: list[tuple[int, int]], interests: list[list[int] | None], headers: dict[str, str] | None,
        rid: str,
    ) -> tuple[list[dict], list[dict]]:  # fmt: skip
        """Retrieval's and ranking's predictions for each checked (user_id, n) of `requests` (one call each, the
        request id `rid` forwarded). Public so that a client of both servers that wants the candidates themselves,
        not only the feed `feed` cuts from them (the homefeed page, serving/ui), calls them exactly as this does."""
        forward = append_forwardable_headers(headers, {"content-type": "application/json", observe.REQUEST_ID: rid})
        if self.token:
            forward["authorization"] = f"Bearer {self.token}"
        # A client per request: an AsyncClient is bound to the event loop it first runs on, and a model can be
        # called from more than one loop (the server's, a test client's).
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=forward) as client:
            with observe.stage(self.name, "upstream"):
                retrieval_body = {
                    "instances": [
                        {"user_id": u, "k": self.candidates, **({"interests": t} if t else {})}
                        for (u, _), t in zip(requests, interests, strict=True)
                    ]
                }
                try:
                    retrieved = await _predict(client, self.retrieval_url, "retrieval", retrieval_body)
                except InferenceError as exc:  # not InvalidInput: a client's mistake stays a 400
                    if self.popular is None:
                        raise
                    observe.dependency_failed(self.name, "retrieval", rid, exc)
                    retrieved = [self._popular_candidates(u, t) for (u, _), t in zip(requests, interests, strict=True)]
                if self.explore:
                    retrieved = [
                        {**found, "candidates": found["candidates"] + self._explored(rid, i, found["candidates"], n)}
                        for i, (found, (_, n)) in enumerate(zip(retrieved, requests, strict=True))
                    ]
                ranked = await self._rank(client, requests, retrieved, rid)
        return retrieved, ranked

    def _popular_candidates(self, user_id: int, interests: list[int] | None) -> dict:
        """A retrieval prediction made of the corpus' most popular pins (of `interests`), flagged degraded."""
        hits = self.popular.popular(self.candidates, tuple(interests) if interests else None)
        return {"user_id": user_id, "candidates": hits, "hidden_excluded": 0, "mode": "degraded",
                "reason": "retrieval unavailable: popular pins"}  # fmt: skip

    async def _rank(self, client: httpx.AsyncClient, requests, retrieved: list[dict], rid: str) -> list[dict]:
        """Ranking's prediction per request (an empty one for a user without candidates); retrieval's own order,
        flagged degraded, when the ranking server cannot answer."""
        with_candidates = [i for i, found in enumerate(retrieved) if found["candidates"]]
        body = {
            "instances": [
                {"user_id": requests[i][0], "candidates": [c["pin_id"] for c in retrieved[i]["candidates"]]}
                for i in with_candidates
            ]
        }
        out = [{"scores": [], "unscored": [], "mode": found["mode"], "reason": None} for found in retrieved]
        try:
            ranked = await _predict(client, self.ranking_url, "ranking", body) if with_candidates else []
        except InferenceError as exc:  # not InvalidInput: a client's mistake stays a 400
            observe.dependency_failed(self.name, "ranking", rid, exc)
            for i in with_candidates:
                out[i] = {"scores": [_unranked(c) for c in retrieved[i]["candidates"]], "unscored": [],
                          "mode": "degraded", "reason": "ranking unavailable: retrieval order"}  # fmt: skip
            return out
        for i, r in zip(with_candidates, ranked, strict=True):
            out[i] = r
        return out


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


def _unranked(candidate: dict) -> dict:
    """A retrieval candidate in a ranking score's shape: its retrieval score, no head probabilities."""
    return {"pin_id": candidate["pin_id"], "score": candidate["score"], "click": None, "repin": None, "hide": None}


def feed_number(rid: str, position: int) -> int:
    """The EVENT contract's request id of the feed at `position` in a request with id `rid`: the first feed's is
    the request id's own number, the others' that of `<rid>/<position>` (each feed is a request of its own to the
    event log, so that HIT@3 and the action joins group one user's feed)."""
    return request_number(rid if position == 0 else f"{rid}/{position}")


def feed(user_id: int, n: int, retrieved: dict, ranked: dict, explore: int = 0) -> dict:
    """One user's homefeed prediction: the `n` best of ranking's scores, with retrieval's interest and source; with
    `explore`, the last slots go to the best-scored exploration candidates (source "explore"), if any."""
    found = {c["pin_id"]: c for c in retrieved["candidates"]}
    explored = [s for s in ranked["scores"] if found[s["pin_id"]]["source"] == EXPLORE][:explore]
    regular = [s for s in ranked["scores"] if found[s["pin_id"]]["source"] != EXPLORE][: n - len(explored)]
    pins = [
        {**s, "interest_id": found[s["pin_id"]]["interest_id"], "source": found[s["pin_id"]]["source"]}
        for s in regular + explored
    ]
    modes = [retrieved["mode"], ranked["mode"]]
    reasons = [r for r in (retrieved.get("reason"), ranked.get("reason")) if r]
    return {
        "user_id": user_id,
        "mode": max(modes, key=MODES.index),
        "reason": "; ".join(reasons) or None,
        "pins": pins,
        "candidates": len(found),
        "hidden_excluded": retrieved["hidden_excluded"],
        "unscored": len(ranked["unscored"]),
    }
