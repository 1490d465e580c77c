"""`homefeed demo`: the whole loop on one machine, then a look at what it serves.

It runs homefeed_training through kfp.local, starts the retrieval, ranking and homefeed model servers on the run's
artifacts (loopback, free ports), asks the homefeed endpoint for three users' feeds over REST and prints them next
to the users' interests and recent actions as the online store holds them, then stops the servers it started.
`demo.json` in the run directory keeps what was shown and the per-step times (docs/results.md's tables read it).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from components.data.contracts import ACTIONS, SEGMENTS
from components.data.dataset import Dataset
from homefeed.config import Settings
from monitoring.drift import DRIFT_SUMMARY

RECENT = 5  # recent actions shown per user
DEMO_FILE = "demo.json"


def pick_users(dataset: Path, n: int = 3) -> list[int]:
    """Up to `n` users with a recent history, from different segments and different main interests: per segment in
    SEGMENTS order, the user with the most actions on the last day of events whose most engaged interest on that
    day is not already shown, so the feeds side by side show personalisation rather than one taste three times."""
    ds = Dataset(dataset)
    ev = ds.read("events", columns=["user_id", "pin_id", "action", "ts"])
    recent = ev[(ev.ts >= ev.ts.max() - 86_400_000) & (ev.action != "impression")]
    pin_interest = ds.read("pins", columns=["pin_id", "interest_id"]).set_index("pin_id")["interest_id"]
    recent = recent.assign(interest=pin_interest.reindex(recent.pin_id).to_numpy())
    segment = ds.read("users", columns=["user_id", "segment"]).set_index("user_id")["segment"]
    per_user = recent.groupby("user_id").agg(n=("pin_id", "size"), interest=("interest", lambda x: x.mode().iloc[0]))
    per_user = per_user.join(segment).reset_index().sort_values(["n", "user_id"], ascending=[False, True])
    picked: list[int] = []
    shown: set[int] = set()
    for seg in SEGMENTS:
        for row in per_user[per_user.segment == seg].itertuples():
            if row.interest not in shown:
                picked.append(int(row.user_id))
                shown.add(row.interest)
                break
        if len(picked) == n:
            break
    return picked


def fetch_feeds(homefeed_url: str, users: list[int], n: int, timeout_s: float = 60.0) -> list[dict]:
    """One REST call to the homefeed entry (KServe v1 protocol) for all `users`."""
    body = {"instances": [{"user_id": u, "n": n} for u in users]}
    response = httpx.post(f"{homefeed_url}/v1/models/homefeed:predict", json=body, timeout=timeout_s)
    if response.status_code != 200:
        raise RuntimeError(f"homefeed answered {response.status_code}: {response.text}")
    return response.json()["predictions"]


def user_context(features_dir: Path, dataset: Path, users: list[int], names: pd.Series) -> list[dict]:
    """Segment, declared interests and the last actions of each user, read from the online store; `names` maps
    interest ids to names."""
    from feast import FeatureStore

    from components.features.store import online_user_features

    pin_interest = Dataset(dataset).read("pins", columns=["pin_id", "interest_id"]).set_index("pin_id")["interest_id"]
    rows = online_user_features(FeatureStore(repo_path=str(features_dir)), users)
    out = []
    for _, row in rows.iterrows():
        recent = [
            {"action": ACTIONS[a], "pin_id": int(p), "interest": names[pin_interest[p]]}
            for p, a in zip(row.seq_pin_ids[:RECENT], row.seq_actions[:RECENT], strict=True)
        ]
        out.append(
            {
                "user_id": int(row.user_id),
                "segment": row.segment,
                "interests": [names[i] for i in row.declared_interests],
                "recent": recent,
            }
        )
    return out


def feed_tables(contexts: list[dict], feeds: list[dict], interest_names: pd.Series) -> list[Table]:
    """One table per user: the recent actions (online sequence) beside the homefeed, row by row."""
    tables = []
    for ctx, feed in zip(contexts, feeds, strict=True):
        table = Table(
            title=f"user {ctx['user_id']} ({ctx['segment']}) · declared: {', '.join(ctx['interests']) or '-'}",
            caption=f"repin, click, hide: predicted probabilities · {feed['candidates']} candidates retrieved, "
            f"{feed['hidden_excluded']} hidden pins excluded",
        )
        table.add_column("recent actions", style="dim")
        table.add_column("#", justify="right")
        table.add_column("pin", justify="right")
        table.add_column("interest")
        for head in ("repin", "click", "hide"):
            table.add_column(head, justify="right")
        for i, pin in enumerate(feed["pins"]):
            recent = ctx["recent"][i] if i < len(ctx["recent"]) else None
            table.add_row(
                f"{recent['action']} · {recent['interest']}" if recent else "",
                str(i + 1),
                str(pin["pin_id"]),
                str(interest_names[pin["interest_id"]]),
                *(f"{pin[head]:.3f}" for head in ("repin", "click", "hide")),
            )
        tables.append(table)
    return tables


def stream_line(meta: dict) -> str:
    """How the online sequences were filled: the features step's stream replay and its parity check."""
    return (
        f"online sequences ({meta['online_store']}): {meta['stream_events']:,} events streamed, "
        f"{meta['stream_applied']:,} actions applied, {meta['stream_invalid']} invalid, {meta['stream_pushes']} pushes; "
        f"parity with the offline definition: {meta['parity_users']:,} users, {meta['parity_mismatches']} mismatches"
    )


def steps_table(steps: list[dict], total_s: float) -> Table:
    table = Table(title="per-step wall time")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for s in steps:
        table.add_row(s["name"], f"{s['seconds']:.1f}")
    table.add_row("[bold]total[/]", f"[bold]{total_s:.1f}[/]")
    return table


def demo_params(settings: Settings) -> dict:
    """The settings' pipeline parameters for a demo run: a registry of the demo's own, emptied first (so its gate
    always deploys the model it just trained, and the run's pin index exists), and no deploy target (the demo starts
    and stops its own servers rather than leaving the local deployment running)."""
    params = settings.pipeline.model_dump()
    if not params["registry"]:
        registry = (settings.workspace / "demo" / "registry").resolve()
        shutil.rmtree(registry, ignore_errors=True)
        params["registry"] = str(registry)
    params["deploy_target"] = params["deploy_target"] or "none"
    return params


def run_demo(settings: Settings, console: Console) -> dict:
    """The demo end to end; returns what it wrote to demo.json."""
    from components.cluster.launcher import running_servers
    from homefeed.pipeline_commands import metrics_table, run_pipeline
    from homefeed.serve_commands import server_specs

    t0 = time.perf_counter()
    run = run_pipeline(demo_params(settings), settings.runs_dir)
    dataset, features = run.path("dataset"), run.path("feature_store")
    users = pick_users(dataset)
    t_serve = time.perf_counter()
    with console.status("starting the retrieval, ranking and homefeed model servers"):
        specs = server_specs(run, settings.serving.candidates)
        with running_servers(specs, log_dir=run.run_dir / "servers") as urls:
            started_s = time.perf_counter() - t_serve
            feeds = fetch_feeds(urls["homefeed"], users, settings.serving.feed_size)
    serve_s = time.perf_counter() - t_serve
    interest_names = Dataset(dataset).read("interests").set_index("interest_id")["name"]
    contexts = user_context(features, dataset, users, interest_names)
    for table in feed_tables(contexts, feeds, interest_names):
        console.print(table)
    console.print(stream_line(run.artifacts["feature_store"]["metadata"]))
    console.print(metrics_table(run.artifacts["metrics"]["metadata"]))
    drift = print_drift(run, console)
    steps = [{"name": s.name, "seconds": s.seconds} for s in run.steps]
    steps.append({"name": "serve (start 3 servers, query, stop)", "seconds": round(serve_s, 2)})
    total = round(time.perf_counter() - t0, 2)
    console.print(steps_table(steps, total))
    result = {
        "run_id": run.run_id,
        "params": run.params,
        "steps": steps,
        "servers_ready_s": round(started_s, 2),
        "total_s": total,
        "artifacts": run.artifacts,
        "users": contexts,
        "feeds": feeds,
        "drift_report": drift["html"],
    }
    (run.run_dir / DEMO_FILE).write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"run directory: {run.run_dir} (demo.json, run.json, pipeline.log)")
    return result


def print_drift(run, console: Console) -> dict:
    """The run's monitor step: its drift table (the monitoring job's summary) and where its HTML report is."""
    from homefeed.pipeline_commands import drift_table

    drift = json.loads((run.path("drift") / DRIFT_SUMMARY).read_text())
    console.print(drift_table(drift))
    console.print(f"drift report: {drift['html']}")
    return drift
