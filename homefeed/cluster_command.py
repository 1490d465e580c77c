"""`homefeed cluster up|down|status`: the dev overlay's workloads as containers on this machine
(components/cluster/local_cluster.py). A pipeline run deploys to it with `--set deploy_target=podman:DIR`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from homefeed.context import Ctx, console

_DIR = click.option(
    "--dir", "cluster_dir", type=click.Path(file_okay=False, path_type=Path),
    help="The cluster's directory (default: <workspace>/cluster).",
)  # fmt: skip


def _where(obj: Ctx, cluster_dir: Path | None) -> Path:
    return (cluster_dir or obj.settings.workspace / "cluster").resolve()


@click.group()
def cluster() -> None:
    """The deployment's workloads as podman pods, made from the rendered manifests (manifests/overlays/dev)."""


@cluster.command()
@_DIR
@click.option("--name", default="homefeed", show_default=True, help="Prefix of the pods and the network's name.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=300.0, show_default=True)
@click.pass_obj
def up(obj: Ctx, cluster_dir: Path | None, name: str, timeout_s: float) -> None:
    """Start Milvus, Redis and the Evidently UI, and the release last deployed here; waits until all are ready."""
    from components.cluster import local_cluster

    where = _where(obj, cluster_dir)
    try:
        state = local_cluster.up(where, name=name, timeout_s=timeout_s)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"cluster [bold]{state.name}[/] up in {state.up_seconds} s ({where})")
    _print_status(where)
    if state.version is None:
        settings = local_cluster.client_settings(where)
        console.print(
            "no release yet: deploy one with\n"
            f"  homefeed pipeline run --local --set deploy_target=podman:{where}\n"
            f"(the run then writes features to {settings['online_store']} and the index to {settings['index_uri']})"
        )


@cluster.command()
@_DIR
@click.pass_obj
def down(obj: Ctx, cluster_dir: Path | None) -> None:
    """Stop and remove every pod and the network; volumes and releases stay for the next `up`."""
    from components.cluster import local_cluster

    removed = local_cluster.down(_where(obj, cluster_dir))
    console.print(f"removed {len(removed)} pods" + (f": {', '.join(removed)}" if removed else ""))


@cluster.command()
@_DIR
@click.pass_obj
def status(obj: Ctx, cluster_dir: Path | None) -> None:
    """Each workload's pod, containers, readiness and URL."""
    _print_status(_where(obj, cluster_dir))


def _print_status(where: Path) -> None:
    from components.cluster import local_cluster

    try:
        state = local_cluster.ClusterState.read(where)
        rows = local_cluster.status(where)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    served = "no release" if state.version is None else f"v{state.version}"
    table = Table(title=f"cluster {state.name} ({served}; network {state.network} {state.subnet})")
    for col in ("workload", "kind", "state", "ready", "url"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["workload"], r["kind"], r["state"], "yes" if r["ready"] else "no", r["url"] or "-")
    console.print(table)
