"""The helpers the rules stand on: label selection, secret-looking names, image references."""

from __future__ import annotations

import pytest
from network import selects
from policy import looks_secret, split_image

pytestmark = pytest.mark.manifests

LABELS = {"app": "ranking", "tier": "serving"}


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ({}, True),
        ({"matchLabels": {"app": "ranking"}}, True),
        ({"matchLabels": {"app": "ranking", "tier": "batch"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["ranking", "retrieval"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["retrieval"]}]}, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["ranking"]}]}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["yes"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"tier": "serving"},
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}],
            },
            False,
        ),
    ],
)
def test_label_selection(selector, selected):
    assert selects(selector, LABELS) is selected


def test_unknown_selector_operator_is_an_error():
    with pytest.raises(ValueError, match="Matches"):
        selects({"matchExpressions": [{"key": "app", "operator": "Matches", "values": ["r.*"]}]}, LABELS)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASSWORD", True),
        ("apiKey", True),
        ("KF_PIPELINES_SA_TOKEN_PATH", True),
        ("GITHUB_CREDENTIALS", True),
        ("MONKEY", False),
        ("HOMEFEED_WORKSPACE", False),
        ("TOKENIZER_DIR", False),
    ],
)
def test_secret_looking_names(name, secret):
    assert looks_secret(name) is secret


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("ghcr.io/homefeed-platform/homefeed:0.1.0", ("ghcr.io/homefeed-platform/homefeed", "0.1.0")),
        ("ghcr.io/homefeed-platform/homefeed", ("ghcr.io/homefeed-platform/homefeed", None)),
        ("registry:5000/homefeed", ("registry:5000/homefeed", None)),
        ("registry:5000/homefeed:1", ("registry:5000/homefeed", "1")),
        ("ghcr.io/x/y:1@sha256:" + "a" * 64, ("ghcr.io/x/y", "sha256:" + "a" * 64)),
        ("ghcr.io/x/y@sha256:" + "a" * 64, ("ghcr.io/x/y", "sha256:" + "a" * 64)),
    ],
)
def test_split_image(image, parts):
    assert split_image(image) == parts
