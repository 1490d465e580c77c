"""`homefeed eval ...`: offline experiments that train and measure model variants side by side.

`homefeed eval retrieval` trains the retrieval variants (an ablation ladder from the plain two-tower to DHEN with
conditional and multi-embedding retrieval; components/evaluate/retrieval_ablation.py) on one dataset with Ray
Train and measures them with the popularity baseline on a time-split holdout; it writes retrieval_eval.json and
retrieval_eval.md and prints the tables.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.markdown import Markdown

from homefeed.context import Ctx, console


@click.group("eval")
def eval_group() -> None:
    """Offline experiments: model variants measured side by side with baselines."""


@eval_group.command("retrieval")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path), help="A dataset directory.")
@click.option("--source", help="Data source when no --dataset: world:<preset>, movielens:DIR, sequences:FILE.")
@click.option("--variants", help="Comma-separated variant names (default: all of them, the ablation ladder).")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--holdout-days", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@click.pass_obj
def retrieval(obj: Ctx, dataset, source, variants: str, epochs: int, holdout_days: float, seed: int, out) -> None:
    """Train the retrieval variants and measure recall@100/@1000 overall, per segment and per interest."""
    from components import steps
    from components.evaluate.retrieval_ablation import default_variants, evaluate_variants, split_cut

    out = out or obj.settings.workspace / "eval" / "retrieval"
    known = {v.name: v for v in default_variants(epochs, seed)}
    chosen = [name.strip() for name in (variants or ",".join(known)).split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        raise click.BadParameter(f"unknown variants {unknown}; choose from {sorted(known)}", param_hint="--variants")
    if dataset is None:
        dataset = out / "dataset"
        source = source or obj.settings.pipeline.source
        with console.status(f"preparing {source}"):
            steps.prepare_data(source, dataset, seed)
    cut = split_cut(dataset, holdout_days)
    with console.status(f"training and measuring {', '.join(chosen)} (Ray Train)"):
        result = evaluate_variants(dataset, out, cut, [known[name] for name in chosen])
    console.print(Markdown((out / "retrieval_eval.md").read_text()))
    console.print(f"written {out / 'retrieval_eval.json'} ({result['users']:,} users evaluated)")
