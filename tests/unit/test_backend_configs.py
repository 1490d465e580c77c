"""The settings that name a backend (online store, index, registry) are typed configs, one per backend with a `type`
tag, parsed once from the string a pipeline parameter or a CLI flag carries; `str()` gives that string back, so a
config survives the trip through KFP; a bad string is refused with what is accepted, never echoing a password."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from components.features.online_store import OnlineStore, RedisStore, SqliteStore, parse_online_store
from components.index.client import IndexTarget, LiteIndex, MilvusServer, parse_index_target
from components.registry import LocalRegistry, RegistryConfig, S3Registry, parse_registry
from pipelines.params import PipelineParams

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("spec", "config", "normal"),
    [
        ("sqlite", SqliteStore(), "sqlite"),
        ("redis://cache:6380", RedisStore(host="cache", port=6380), "redis://cache:6380/0"),
        (" redis://cache/3 ", RedisStore(host="cache", db=3), "redis://cache:6379/3"),
    ],
)
def test_online_store_specs_parse_to_their_backend_and_print_back(spec, config, normal):
    assert parse_online_store(spec) == config and str(config) == normal
    assert parse_online_store(normal) == config and parse_online_store(config) is config
    assert TypeAdapter(OnlineStore).validate_python(config.model_dump()) == config  # the `type` tag picks the model


@pytest.mark.parametrize("spec", ["redis", "redis://h:port", "redis://h:6379/x", "postgres://h/0", ""])
def test_a_bad_online_store_spec_says_what_is_accepted(spec):
    with pytest.raises(ValueError, match=r"sqlite|redis://HOST:PORT|must be a number|Port"):
        parse_online_store(spec)


def test_a_redis_config_refuses_a_port_out_of_range():
    with pytest.raises(ValidationError):
        RedisStore(host="h", port=0)


def test_index_targets_lite_when_empty_a_server_otherwise():
    assert parse_index_target("") == LiteIndex() and str(LiteIndex()) == ""
    server = parse_index_target("https://milvus.homefeed:19530")
    assert server == MilvusServer(uri="https://milvus.homefeed:19530") and str(server) == server.uri
    assert TypeAdapter(IndexTarget).validate_python({"type": "lite"}) == LiteIndex()


def test_an_index_uri_with_a_password_is_refused_without_echoing_it():
    for build in (lambda: parse_index_target("http://root:s3cret@milvus:19530"),
                  lambda: MilvusServer(uri="http://root:s3cret@milvus:19530")):  # fmt: skip
        with pytest.raises(ValueError) as err:
            build()
        assert "s3cret" not in str(err.value) and "MILVUS_TOKEN" in str(err.value)


@pytest.mark.parametrize(
    ("uri", "config"),
    [
        ("s3://models/homefeed/", S3Registry(bucket="models", prefix="homefeed")),
        ("s3://models", S3Registry(bucket="models")),
        ("/mnt/registry", LocalRegistry(path="/mnt/registry")),
        ("file:///mnt/registry", LocalRegistry(path="/mnt/registry")),
    ],
)
def test_registry_uris_parse_to_their_backend(uri, config):
    assert parse_registry(uri) == config
    assert parse_registry(str(config)) == config
    assert TypeAdapter(RegistryConfig).validate_python(config.model_dump()) == config


@pytest.mark.parametrize("uri", ["gs://bucket/x", "s3://", "file://host/x", "  "])
def test_a_bad_registry_uri_is_refused(uri):
    with pytest.raises(ValueError, match="registry URI"):
        parse_registry(uri)


def test_pipeline_params_hold_the_normal_string_of_each_config():
    p = PipelineParams(online_store="redis://cache", registry="s3://models/homefeed/", index_uri="http://m:19530")
    assert (p.online_store, p.registry, p.index_uri) == (
        "redis://cache:6379/0",
        "s3://models/homefeed",
        "http://m:19530",
    )
    with pytest.raises(ValidationError, match="registry URI"):
        PipelineParams(registry="gs://x")
