"""Serving latency on CPU, end to end over HTTP: the retrieval endpoint and the homefeed endpoint (retrieval, then
ranking of its candidates, the best N: the full two-hop path), each at concurrency 1 and 8, p50/p99 per request.

    python -m bench.serving_latency [--preset small] [--requests 400] [--artifacts DIR | --keep DIR] [--name NAME]

The artifacts are the pipeline's, built by its own steps (pipelines/steps.py) from `world:<preset>` (small by
default, the demo's world: about 5k users, 20k pins) in a child process: data, Feast features (SQLite online store),
retrieval two-tower, ranking (Pinnability + TransAct), Milvus Lite index of the serving corpus. Training is short
(1 epoch each, ranking on at most 20,000 impressions): latency does not depend on the models' quality, only on their
shapes, which are the defaults. `--artifacts DIR` reuses a directory with data/ features/ retrieval/ ranking/ index/
(e.g. one a previous `--keep DIR` built); otherwise they are built into a temporary directory (into DIR and kept with
`--keep DIR`).

The three KServe model servers run as real processes on loopback, as `components/cluster/launcher.py` starts them (one process
each, default settings, CPU, torch's default thread count; the homefeed asks retrieval for CANDIDATES candidates).
The retrieval server reads a copy of the index directory. Requests are one user each: retrieval
`{"user_id": U, "k": 100}`, homefeed `{"user_id": U, "n": 10}`; users are drawn uniformly (seeded) from every user of
the world (all have online features). Per endpoint: WARMUP requests, then per arm REQUESTS requests at concurrency 1
(sequential) and 2 x REQUESTS at concurrency 8 (8 client threads, one httpx.Client each, back to back). A latency is
the client's wall time of one POST (request sent, whole response read). Only 200s whose users were all answered
`personalized` count as samples: every non-200, transport error, and other mode (cold_start, degraded) is counted
and reported, never timed.

Where the time goes: each server's `/metrics` is read before and after every arm; the difference of the
`homefeed_stage_seconds` histograms (sum / count per model and stage: features = Feast online read, tower = user
tower, ann = Milvus search, rank = ranking forward pass, upstream = the homefeed's calls to retrieval and ranking)
gives the mean per stage within that arm, next to KServe's own `request_predict_seconds` (the whole predict call).

The client runs on the same machine as the servers and shares its cores with them (and with whatever else runs
there): its time is part of every latency, and at concurrency 8 its threads compete with the servers for the CPU.
The machine's load average before and after is recorded; run it at a quiet moment.
Run: `python -m bench.serving_latency` (writes bench/results/serving_latency.{json,md}).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.harness import run_child, write_result

NAME = "serving_latency"
CANDIDATES, K, N = 200, 100, 10
CONCURRENCY = (1, 8)
REQUESTS, WARMUP = 400, 20  # per arm at concurrency 1; concurrency 8 sends twice as many
RETRIEVAL_EPOCHS, RANKING_EPOCHS, RANKING_MAX_EXAMPLES = 1, 1, 20_000
TIMEOUT_S = 60.0
PARTS = ("data", "features", "retrieval", "ranking", "index")
BUILD_FILE = "build.json"
STAGE_METRIC, PREDICT_METRIC = "homefeed_stage_seconds", "request_predict_seconds"
ENDPOINTS = {  # model (its endpoint) -> one user's instance
    "retrieval": lambda u: {"user_id": u, "k": K},
    "homefeed": lambda u: {"user_id": u, "n": N},
}


# --- artifacts -----------------------------------------------------------------------------------------------------


def build(root: Path, world: str, seed: int) -> dict:
    """The pipeline's steps into root/{data,features,retrieval,ranking,index}, short training; the seconds of each
    step and what they built, also written to root/build.json."""
    from pipelines import steps

    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - t0, 1)

    with step("data"):
        manifest = steps.prepare_data(f"world:{world}", root / "data", seed)
    split = steps.time_split(root / "data")
    with step("features"):
        features = steps.build_features(root / "data", root / "features")
    with step("retrieval"):
        steps.train_retrieval_step(root / "data", root / "retrieval", split, epochs=RETRIEVAL_EPOCHS, seed=seed)
    with step("ranking"):
        steps.train_ranking_step(root / "data", root / "retrieval", root / "ranking", split, epochs=RANKING_EPOCHS,
                                 max_examples=RANKING_MAX_EXAMPLES, seed=seed)  # fmt: skip
    with step("index"):
        index = steps.index_pins(root / "data", root / "retrieval", root / "index")
    info = {
        "world": f"world:{world}",
        "seed": seed,
        "rows": manifest.get("rows", {}),
        "users": features["users"],
        "pins": features["pins"],
        "training": {
            "retrieval_epochs": RETRIEVAL_EPOCHS,
            "ranking_epochs": RANKING_EPOCHS,
            "ranking_max_examples": RANKING_MAX_EXAMPLES,
        },
        "corpus": index["count"],
        "build_s": seconds,
    }
    (root / BUILD_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def describe(root: Path) -> dict:
    """What an artifact directory holds: its build.json when there is one, else what can be read from it."""
    from components.data.dataset import Dataset
    from components.index.bundle import IndexBundle

    missing = [p for p in PARTS if not (root / p).is_dir()]
    if missing:
        raise FileNotFoundError(f"{root} lacks {', '.join(missing)}: it needs {', '.join(PARTS)} subfolders")
    info = json.loads((root / BUILD_FILE).read_text()) if (root / BUILD_FILE).exists() else {}
    info.setdefault("world", "(reused artifacts, no build.json)")
    info["corpus"] = IndexBundle.read(root / "index").count
    info["users"] = int(len(Dataset(root / "data").read("users", columns=["user_id"])))
    return info


# --- measurement ---------------------------------------------------------------------------------------------------


def _post(client, url: str, model: str, user: int) -> tuple[float, str | None, list[str]]:
    """(seconds, error or None, the users' modes) of one one-user request."""
    import httpx

    body = {"instances": [ENDPOINTS[model](int(user))]}
    t0 = time.perf_counter()
    try:
        response = client.post(f"{url}/v1/models/{model}:predict", json=body)
    except httpx.HTTPError as exc:
        return time.perf_counter() - t0, type(exc).__name__, []
    seconds = time.perf_counter() - t0
    if response.status_code != 200:
        return seconds, f"HTTP {response.status_code}", []
    try:
        return seconds, None, [p.get("mode", "(none)") for p in response.json()["predictions"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return seconds, "bad body", []


def run_arm(url: str, model: str, users: np.ndarray, concurrency: int) -> dict:
    """`len(users)` one-user requests, `concurrency` in flight at all times (one httpx.Client per thread)."""
    import httpx

    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def one(user: int):
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=TIMEOUT_S)
            with lock:
                clients.append(local.client)
        return _post(local.client, url, model, user)

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(one, users.tolist()))
    finally:
        for client in clients:
            client.close()
    wall = time.perf_counter() - t0
    errors = Counter(err for _, err, _ in results if err)
    modes = Counter(m for _, err, ms in results if not err for m in ms)
    ms = np.array([s for s, err, m in results if not err and m and all(x == "personalized" for x in m)]) * 1000
    timed = {}
    if len(ms):
        timed = {
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2),
            "max_ms": round(float(ms.max()), 2),
        }
    return {
        "endpoint": model,
        "concurrency": concurrency,
        "requests": len(users),
        "samples": len(ms),
        **timed,
        "req_per_s": round(len(users) / wall, 2),
        "wall_s": round(wall, 2),
        "errors": dict(errors),
        "other_modes": {m: n for m, n in modes.items() if m != "personalized"},
    }


def scrape(urls: dict[str, str]) -> dict[tuple[str, str], list[float]]:
    """{(model, stage): [sum_s, count]} of every server's homefeed_stage_seconds, plus (model, "predict") from
    KServe's request_predict_seconds; whatever a server does not expose is simply absent."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, str], list[float]] = {}
    for url in urls.values():
        try:
            text = httpx.get(f"{url}/metrics", timeout=10).text
            families = list(text_string_to_metric_families(text))
        except (httpx.HTTPError, ValueError):
            continue
        for family in families:
            if family.name not in (STAGE_METRIC, PREDICT_METRIC):
                continue
            for sample in family.samples:
                kind = sample.name.rsplit("_", 1)[-1]
                if kind not in ("sum", "count"):
                    continue
                if family.name == STAGE_METRIC:
                    key = (sample.labels.get("model", "?"), sample.labels.get("stage", "?"))
                else:
                    key = (sample.labels.get("model_name", "?"), "predict")
                acc = out.setdefault(key, [0.0, 0.0])
                acc[0 if kind == "sum" else 1] += sample.value
    return out


def stage_means(before: dict, after: dict) -> dict[str, dict]:
    """Per "model/stage": calls and mean ms between two scrapes (only those that ran in between)."""
    out = {}
    for key in sorted(after):
        total, count = (a - b for a, b in zip(after[key], before.get(key, [0.0, 0.0]), strict=True))
        if count > 0:
            out[f"{key[0]}/{key[1]}"] = {"calls": int(count), "mean_ms": round(total / count * 1000, 2)}
    return out


def measure(urls: dict[str, str], n_users: int, requests: int, warmup: int, seed: int) -> list[dict]:
    arms = []
    for e, model in enumerate(ENDPOINTS):
        rng = np.random.default_rng([seed, e])
        run_arm(urls[model], model, rng.integers(0, n_users, size=warmup), 1)
        for concurrency in CONCURRENCY:
            n = requests * (2 if concurrency > 1 else 1)
            users = np.random.default_rng([seed, e, concurrency]).integers(0, n_users, size=n)
            before = scrape(urls)
            arm = run_arm(urls[model], model, users, concurrency)
            arm["stages"] = stage_means(before, scrape(urls))
            arms.append(arm)
            print(f"{model} c={concurrency}: {json.dumps({k: v for k, v in arm.items() if k != 'stages'})}",
                  flush=True)  # fmt: skip
    return arms


def torch_threads() -> int | None:
    """torch's default intra-op thread count in a fresh process: what each server runs with."""
    proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return int(proc.stdout.strip()) if proc.returncode == 0 else None


# --- report --------------------------------------------------------------------------------------------------------


def _ms(arm: dict, key: str) -> str:
    return f"{arm[key]:.1f}" if key in arm else "n/a"


def _training(setup: dict) -> str:
    t = setup.get("training")
    if not t:
        return "reused artifacts"
    return (f"retrieval {t['retrieval_epochs']} epoch, ranking {t['ranking_epochs']} epoch on at most "
            f"{t['ranking_max_examples']:,} impressions")  # fmt: skip


def markdown(result: dict) -> str:
    setup = result["setup"]
    rows = []
    for a in result["arms"]:
        bad = sum(a["errors"].values()) + sum(a["other_modes"].values())
        detail = ", ".join(f"{k} {v}" for k, v in {**a["errors"], **a["other_modes"]}.items())
        rows.append(f"| {a['endpoint']} | {a['concurrency']} | {a['requests']} | {_ms(a, 'p50_ms')} | "
                    f"{_ms(a, 'p99_ms')} | {_ms(a, 'mean_ms')} | {a['req_per_s']:.1f} | "
                    f"{bad}{f' ({detail})' if detail else ''} |")  # fmt: skip
    names = [f"{a['endpoint']} c={a['concurrency']}" for a in result["arms"]]
    keys = sorted({k for a in result["arms"] for k in a["stages"]}, key=lambda k: (k.split("/")[1] == "predict", k))
    stage_rows = [
        f"| {k.replace('/', ' | ')} | "
        + " | ".join(f"{a['stages'][k]['mean_ms']:.1f}" if k in a["stages"] else "" for a in result["arms"])
        + " |"
        for k in keys
    ]
    stages = ""
    if stage_rows:
        stages = f"""
Mean ms per stage inside the servers, per arm (from their `/metrics`: `homefeed_stage_seconds`; `predict` is KServe's
`request_predict_seconds`, the whole predict call):

| model | stage | {" | ".join(names)} |
|---|---|{"---|" * len(names)}
{chr(10).join(stage_rows)}
"""
    load = result["load_average"]
    return f"""### Serving latency on CPU: retrieval and homefeed endpoints over HTTP

{setup["world"]}: {setup["users"]:,} users, corpus of {setup["corpus"]:,} pins in Milvus Lite; retrieval k={K},
homefeed n={N} from {CANDIDATES} candidates (retrieval, then ranking); one user per request, CPU only, servers with
torch's default {setup["torch_threads"]} threads; models trained briefly ({_training(setup)}: latency depends on
their shapes, not their quality). Latency is the client's wall time per request; the client runs on
the same {result["machine_cores"]} cores as the three servers (load average {load["before"]} before,
{load["after"]} after). Only 200s answered `personalized` are timed; errors counts every other outcome.

| endpoint | concurrency | requests | p50 ms | p99 ms | mean ms | req/s | errors |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{stages}
Reproduce: `python -m bench.serving_latency`
"""


# --- main ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", help="world preset of the built artifacts (default small)")
    parser.add_argument("--requests", type=int, default=REQUESTS, help="per arm at concurrency 1; twice at 8")
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=NAME, help="result name under bench/results/")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--artifacts", type=Path, help="reuse this directory's data/features/retrieval/ranking/index")
    given.add_argument("--keep", type=Path, help="build the artifacts into this directory and keep them")
    given.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # the child: build, print the JSON summary
    args = parser.parse_args(argv)
    if args.build:
        print(json.dumps(build(args.build, args.preset, args.seed)))
        return {}

    from components.cluster.launcher import homefeed_specs, running_servers

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = args.artifacts or args.keep or tmp / "artifacts"
        if args.artifacts is None:  # built in a child: Ray, torch and the index lock stay out of the client
            print(f"building world:{args.preset} artifacts into {root} ...", flush=True)
            run_child("bench.serving_latency", "--build", str(root), "--preset", args.preset, "--seed", str(args.seed))
        setup = describe(root)
        setup["torch_threads"] = torch_threads()
        index = shutil.copytree(root / "index", tmp / "index", ignore=shutil.ignore_patterns("LOCK"))
        specs = homefeed_specs(root / "retrieval", root / "ranking", root / "features", index, CANDIDATES, "cpu")
        load_before = [round(x, 2) for x in os.getloadavg()]
        t0 = time.perf_counter()
        with running_servers(specs, tmp / "logs") as urls:
            ready_s = time.perf_counter() - t0
            arms = measure(urls, setup["users"], args.requests, args.warmup, args.seed)
        load_after = [round(x, 2) for x in os.getloadavg()]
    result = {
        "setup": {
            **setup,
            "candidates": CANDIDATES,
            "k": K,
            "n": N,
            "concurrency": list(CONCURRENCY),
            "requests": args.requests,
            "warmup": args.warmup,
            "seed": args.seed,
            "device": "cpu",
            "servers_ready_s": round(ready_s, 1),
        },
        "client": "same machine as the servers, sharing its cores: httpx, one Client per thread",
        "machine_cores": os.cpu_count(),
        "load_average": {"before": load_before, "after": load_after},
        "arms": arms,
    }
    write_result(args.name, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
