"""`python -m serving {retrieval,ranking,homefeed,actions} ...`: run one model server (blocks until SIGTERM).

    python -m serving retrieval --model-dir D --features-dir F --index-dir I --http-port 8080
    python -m serving ranking --model-dir D --features-dir F --index-dir I [--device cuda] [--dtype bf16] \
        [--compile on] --http-port 8081
    python -m serving homefeed --retrieval-url http://h:8080 --ranking-url http://h:8081 [--candidates 200] \
        [--events redis://h:6379/0 --spool-dir D --model-version V --index-version V] [--index-dir I [--explore N]] \
        --http-port 8082
    python -m serving actions --events redis://h:6379/0 --dead-letter D --http-port 8083

Each listens on loopback unless `--bind-host` says otherwise (a container passes 0.0.0.0); a model server needs
`Authorization: Bearer $SERVING_TOKEN` on its data plane when that variable is set (serving/server.py).

Flag names: importing kserve runs its own argparse parser over sys.argv (`kserve.model_server`), which accepts
abbreviations. A flag of ours that equals or is a prefix of one of kserve's (`--http_port`, `--model_name`, ...)
would be read by kserve too, and a prefix of two of them makes kserve exit on an ambiguous option. So every flag here
is spelled with hyphens, which none of kserve's underscore flags start with; tests/integration/test_serving.py checks
it. Abbreviations are off here so that a shortened flag cannot reach kserve's parser either.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serving.homefeed import DEFAULT_CANDIDATES

LOOPBACK = "127.0.0.1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0], allow_abbrev=False)
    kinds = parser.add_subparsers(dest="kind", required=True)
    retrieval = kinds.add_parser("retrieval", help="the two-tower retrieval predictor (CPU)", allow_abbrev=False)
    retrieval.add_argument("--model-dir", type=Path, required=True, help="the `train retrieval` step's output")
    retrieval.add_argument("--features-dir", type=Path, required=True, help="the Feast repository (`features` step)")
    retrieval.add_argument("--index-dir", type=Path, required=True, help="the `index` step's output (index.json)")
    ranking = kinds.add_parser(
        "ranking", help="the Pinnability ranking predictor (GPU when available)", allow_abbrev=False
    )
    ranking.add_argument("--model-dir", type=Path, required=True, help="the `train ranking` step's output")
    ranking.add_argument("--features-dir", type=Path, required=True, help="the Feast repository (`features` step)")
    ranking.add_argument("--index-dir", type=Path, required=True, help="the `index` step's output (its corpus)")
    ranking.add_argument("--device", default=None, help="torch device; default cuda when available, else cpu")
    ranking.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                         help="auto: bf16 on CUDA, fp32 on CPU")  # fmt: skip
    ranking.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                         help="torch.compile the scoring; auto: on CUDA only")  # fmt: skip
    homefeed = kinds.add_parser("homefeed", help="retrieval then ranking over REST", allow_abbrev=False)
    homefeed.add_argument("--retrieval-url", required=True, help="base URL of the retrieval server")
    homefeed.add_argument("--ranking-url", required=True, help="base URL of the ranking server")
    homefeed.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES, help="retrieval's k per user")
    homefeed.add_argument("--events", default="", help="event bus for impressions: redis://HOST:PORT/DB or file:PATH")
    homefeed.add_argument("--spool-dir", type=Path, default=Path("/tmp/homefeed-spool"),
                          help="where impressions wait while the bus is down")  # fmt: skip
    homefeed.add_argument("--model-version", default="", help="the model version the impressions name")
    homefeed.add_argument("--index-version", default="", help="the index version the impressions name")
    homefeed.add_argument("--index-dir", type=Path, default=None,
                          help="the `index` step's output: its popular pins stand in while retrieval is down")  # fmt: skip
    homefeed.add_argument("--explore", type=int, default=0,
                          help="exploration slots per feed: popular pins of random interests (needs --index-dir)")  # fmt: skip
    homefeed.add_argument("--client-time", action="store_true",
                          help="log impressions at each instance's `ts` (a simulation's clock), not the server's")  # fmt: skip
    actions = kinds.add_parser("actions", help="clicks, repins and hides from clients onto the event bus",
                               allow_abbrev=False)  # fmt: skip
    actions.add_argument("--events", required=True, help="the event bus: redis://HOST:PORT/DB?shards=N or file:PATH")
    actions.add_argument("--dead-letter", type=Path, required=True, help="where invalid events go, with reasons")
    for sub in (retrieval, ranking, homefeed, actions):
        sub.add_argument("--http-port", type=int, default=8080, help="the REST port")
        sub.add_argument("--bind-host", default=LOOPBACK,
                         help="the address to listen on; loopback unless told (0.0.0.0 in a container)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        served = _load(args)
    except (ValueError, FileNotFoundError) as exc:  # a bad option or directory: one line, not a traceback
        parser.exit(2, f"python -m serving {args.kind}: error: {exc}\n")
    if args.kind == "actions":  # no KServe: a plain ASGI app (serving/actions.py)
        from serving.actions import serve_actions

        serve_actions(served, args.dead_letter, args.http_port, args.bind_host)
        return
    from serving import server

    server.serve(served, args.http_port, args.bind_host)


def _load(args):
    """The actions service's event bus, or the predictor to serve; ValueError or FileNotFoundError for what the
    options name wrongly."""
    if args.kind == "actions":
        from components.stream.bus import open_bus

        return open_bus(args.events)
    from serving import server  # after parsing: --help and usage errors answer without loading torch and Feast

    if args.kind == "retrieval":
        model = server.retrieval_predictor(args.model_dir, args.features_dir, args.index_dir)
    elif args.kind == "ranking":
        compile_ = None if args.compile == "auto" else args.compile == "on"
        model = server.ranking_predictor(
            args.model_dir, args.features_dir, args.index_dir, device=args.device, dtype=args.dtype, compile=compile_
        )
    else:
        model = server.homefeed_predictor(
            args.retrieval_url, args.ranking_url, candidates=args.candidates, events_uri=args.events,
            spool_dir=args.spool_dir, versions=(args.model_version, args.index_version), client_time=args.client_time,
            index_dir=args.index_dir, explore=args.explore,
        )  # fmt: skip
    return model


if __name__ == "__main__":
    main()
