"""Submitting the compiled pipeline to a Kubeflow Pipelines cluster: one run now, or a recurring schedule.

Uses the real `kfp.Client` (KFP v2beta1 REST API). A run is created from the compiled package inline
(`create_run_from_pipeline_package`: the pipeline spec travels in the run body), so submitting does not register a
pipeline version per run. Both calls look the experiment up by name and create it when missing.

Errors from the API server come back from kfp as `ApiException`s whose str() is a wall of headers; here they become a
RuntimeError naming the host and the server's own message.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import kfp
from kfp_server_api.exceptions import ApiException
from urllib3.exceptions import HTTPError

# KFP's cron is robfig/cron with a leading seconds field: 03:00:00 on Mondays and Thursdays, twice a week.
DEFAULT_CRON = "0 0 3 * * 1,4"
# The KFP API server rejects a recurring run whose max_concurrency is outside 1..10.
MAX_CONCURRENCY_RANGE = range(1, 11)

T = TypeVar("T")


def client(host: str, namespace: str | None = None, existing_token: str | None = None) -> kfp.Client:
    """A kfp.Client for the KFP API at `host` (e.g. http://localhost:8888 through a port-forward).

    Without `namespace` kfp asks the server's healthz whether it runs multi-user; with it (multi-user Kubeflow), runs
    and experiments are created in that profile namespace.
    """
    if not host:
        raise ValueError("a KFP host URL is required (e.g. http://ml-pipeline.kubeflow:8888)")
    kwargs: dict[str, Any] = {"host": host, "existing_token": existing_token}
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings():
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later": true of every server we target.
        warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
        return _call(host, "connecting", lambda: kfp.Client(**kwargs))


def submit(
    kfp_client: kfp.Client,
    package_path: str | Path,
    params: Mapping[str, Any],
    *,
    experiment: str,
    run_name: str,
) -> dict[str, Any]:
    """Start one run of the compiled pipeline at `package_path` with `params`; returns run_id, run_url, experiment."""
    host = _host(kfp_client)
    path = _package(package_path)
    result = _call(
        host,
        f"submitting run {run_name!r}",
        lambda: kfp_client.create_run_from_pipeline_package(
            pipeline_file=str(path), arguments=dict(params), run_name=run_name, experiment_name=experiment
        ),
    )
    return {
        "run_id": result.run_id,
        "run_url": f"{_ui_prefix(kfp_client, host)}/#/runs/details/{result.run_id}",
        "experiment_id": result.run_info.experiment_id,
        "state": result.run_info.state,
        "host": host,
    }


def validate_cron(cron: str) -> str:
    """KFP's six-field cron (seconds first); a five-field crontab line would silently mean something else."""
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(
            f"cron {cron!r} has {len(fields)} fields; KFP needs 6 (second minute hour day-of-month month "
            f"day-of-week), e.g. {DEFAULT_CRON!r} for 03:00 on Mondays and Thursdays"
        )
    return " ".join(fields)


def schedule(
    kfp_client: kfp.Client,
    package_path: str | Path,
    params: Mapping[str, Any],
    *,
    name: str,
    experiment: str,
    cron: str = DEFAULT_CRON,
    max_concurrency: int = 1,
    no_catchup: bool = True,
    enable_caching: bool | None = None,
) -> dict[str, Any]:
    """Create a recurring run of the compiled pipeline; returns recurring_run_id, experiment_id, cron, status.

    `max_concurrency=1` keeps a slow retraining from overlapping the next one; `no_catchup` makes a paused schedule
    start one run when re-enabled instead of back-filling every missed slot.
    """
    cron = validate_cron(cron)
    if max_concurrency not in MAX_CONCURRENCY_RANGE:
        raise ValueError(f"max_concurrency must be between 1 and 10 (KFP's limit), got {max_concurrency}")
    host = _host(kfp_client)
    path = _package(package_path)
    exp = _call(
        host, f"finding or creating experiment {experiment!r}", lambda: kfp_client.create_experiment(experiment)
    )
    recurring = _call(
        host,
        f"creating recurring run {name!r}",
        lambda: kfp_client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name=name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=dict(params),
            pipeline_package_path=str(path),
            enable_caching=enable_caching,
        ),
    )
    return {
        "recurring_run_id": recurring.recurring_run_id,
        "experiment_id": exp.experiment_id,
        "cron": cron,
        "status": recurring.status,
        "host": host,
    }


def _package(package_path: str | Path) -> Path:
    path = Path(package_path)
    if not path.is_file():
        raise FileNotFoundError(f"compiled pipeline package not found: {path} (compile the pipeline first)")
    return path


def _host(kfp_client: kfp.Client) -> str:
    # kfp.Client keeps the host only on its (private) configuration; it is what errors should name.
    config = getattr(kfp_client, "_existing_config", None)
    return getattr(config, "host", None) or "<unknown KFP host>"


def _ui_prefix(kfp_client: kfp.Client, host: str) -> str:
    # The same prefix kfp prints its own "Run details" link with (ui_host, else the API host).
    prefix = getattr(kfp_client, "_get_url_prefix", None)
    return prefix() if callable(prefix) else host


def _call(host: str, action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ApiException as exc:
        raise RuntimeError(
            f"KFP API at {host}: {action} failed with HTTP {exc.status} {exc.reason}: {_message(exc)}"
        ) from exc
    except (HTTPError, TimeoutError) as exc:  # unreachable server; kfp's healthz retries end in a TimeoutError
        raise RuntimeError(f"KFP API at {host}: {action} failed (server unreachable or unhealthy): {exc}") from exc


def _message(exc: ApiException) -> str:
    """The grpc-gateway error's `message` (KFP's `error` in older servers), else the raw body."""
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else (exc.body or "")
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, TypeError):
        return body.strip() or "no message"
    if isinstance(parsed, dict):
        return str(parsed.get("message") or parsed.get("error") or body.strip())
    return body.strip()
