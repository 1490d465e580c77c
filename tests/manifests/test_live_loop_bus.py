"""The live loop's three parties name one event bus: the homefeed predictor publishes impressions to it, the actions
service publishes actions to it, the stream processor consumes it. A different URI (another shard count, prefix or
retention) would split or trim the streams under the others."""

from __future__ import annotations

import pytest
from render import overlay_names

from components.stream.bus import RedisStreams

pytestmark = pytest.mark.manifests


def _bus_args(objects) -> dict[str, str]:
    found = {}
    for obj in objects:
        spec = obj.get("spec", {})
        pod = spec.get("predictor") or spec.get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            args = container.get("args", [])
            for i, arg in enumerate(args):
                if arg.startswith("--events="):
                    found[obj["metadata"]["name"]] = arg.removeprefix("--events=")
                elif arg.startswith("redis://") and args[:1] == ["stream"] and i == 1:
                    found[obj["metadata"]["name"]] = arg
    return found


@pytest.mark.parametrize("target", overlay_names())
def test_every_party_of_the_live_loop_names_the_same_bus(targets, target):
    found = _bus_args(targets(target))
    assert set(found) == {"homefeed", "actions", "stream-processor"}, found
    assert len(set(found.values())) == 1, found
    (uri,) = set(found.values())
    assert RedisStreams.parse(uri).shards >= 1  # a URI the bus accepts
