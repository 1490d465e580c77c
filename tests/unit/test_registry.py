import io
import json
import math
import threading
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from components.gate import decide
from components.registry import LocalStorage, Registry, S3Storage, storage_for

pytestmark = pytest.mark.unit


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    d = tmp_path / "artifacts"
    (d / "sub").mkdir(parents=True)
    (d / "model.pt").write_bytes(b"\x00weights-1")
    (d / "sub" / "config.json").write_text('{"dim": 64}')
    return d


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def test_round_trip_register_promote_champion_fetch(reg: Registry, artifacts: Path, tmp_path: Path):
    assert reg.champion("ranking") is None  # a new name: the gate's first run, not an error
    assert reg.versions("ranking") == []
    v = reg.register("ranking", artifacts, {"hit@3_repin": 0.41, "hit@3_hide": math.nan}, run_id="run-1")
    assert v == 1
    [info] = reg.versions("ranking")
    assert (info.version, info.run_id, info.parent) == (1, "run-1", None)
    assert info.metrics["hit@3_repin"] == 0.41 and math.isnan(info.metrics["hit@3_hide"])
    assert set(info.files) == {"model.pt", "sub/config.json"}
    assert reg.champion("ranking") is None  # registering is not promoting

    reg.promote("ranking", v, "first model")
    assert reg.champion("ranking") == info
    pointer = json.loads((tmp_path / "registry/ranking/champion.json").read_text())
    assert pointer["version"] == 1 and pointer["reason"] == "first model" and pointer["promoted_at"]

    out = reg.fetch("ranking", v, tmp_path / "deploy")
    assert (out / "model.pt").read_bytes() == b"\x00weights-1"
    assert (out / "sub" / "config.json").read_text() == '{"dim": 64}'
    assert not (out / "version.json").exists()


def test_layout_on_disk(reg: Registry, artifacts: Path, tmp_path: Path):
    reg.register("ranking", artifacts, {"m": 1.0}, run_id="r")
    reg.promote("ranking", 1, "x")
    root = tmp_path / "registry" / "ranking"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "champion.json",
        "history.jsonl",
        "versions/v1/model.pt",
        "versions/v1/sub/config.json",
        "versions/v1/version.json",
    ]


def test_versions_increase_and_are_immutable(reg: Registry, artifacts: Path):
    v1 = reg.register("ranking", artifacts, {"hit@3_repin": 0.40}, run_id="a")
    before = reg.version("ranking", v1)
    reg.promote("ranking", v1, "first")
    (artifacts / "model.pt").write_bytes(b"\x00weights-2")
    v2 = reg.register("ranking", artifacts, {"hit@3_repin": 0.42}, run_id="b")
    v3 = reg.register("ranking", artifacts, {"hit@3_repin": 0.42}, run_id="b")  # the same again: a new version
    assert (v1, v2, v3) == (1, 2, 3)
    assert reg.version("ranking", v1) == before  # untouched by later registrations
    assert reg.version("ranking", v2).parent == 1  # the champion it was trained to beat
    assert reg.version("ranking", v2).files["model.pt"] != before.files["model.pt"]
    assert [i.version for i in reg.versions("ranking")] == [1, 2, 3]


def test_models_are_independent(reg: Registry, artifacts: Path):
    assert reg.register("ranking", artifacts, {}, run_id="a") == 1
    assert reg.register("retrieval", artifacts, {}, run_id="a") == 1
    assert reg.register("ranking", artifacts, {}, run_id="a") == 2


def test_interrupted_registration_is_skipped_not_reused(reg: Registry, artifacts: Path, tmp_path: Path):
    reg.register("ranking", artifacts, {}, run_id="a")
    (tmp_path / "registry/ranking/versions/v2").mkdir()  # claimed, then the registrant died before version.json
    assert [i.version for i in reg.versions("ranking")] == [1]
    assert reg.register("ranking", artifacts, {}, run_id="b") == 3
    with pytest.raises(FileNotFoundError, match="no version 2"):
        reg.version("ranking", 2)


def test_promote_of_an_unknown_version_or_name_fails_and_writes_nothing(reg: Registry, artifacts: Path, tmp_path):
    reg.register("ranking", artifacts, {}, run_id="a")
    with pytest.raises(FileNotFoundError, match=r"'ranking' has no version 7 .*versions: \[1\]"):
        reg.promote("ranking", 7, "typo")
    with pytest.raises(FileNotFoundError, match="'nosuch' has no version 1"):
        reg.promote("nosuch", 1, "typo")
    assert reg.champion("ranking") is None
    assert not (tmp_path / "registry/ranking/champion.json").exists()
    assert reg.history("ranking") == []


def test_clear_errors_for_bad_input(reg: Registry, artifacts: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="model name '../x'"):
        reg.register("../x", artifacts, {}, run_id="a")
    with pytest.raises(ValueError, match="version must be an integer"):
        reg.version("ranking", 0)
    with pytest.raises(FileNotFoundError, match="artifact directory"):
        reg.register("ranking", tmp_path / "absent", {}, run_id="a")
    with pytest.raises(FileNotFoundError, match="'ranking' has no version 1"):
        reg.fetch("ranking", 1, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not registered"):
        reg.record("ranking", {"deploy": True})


def test_fetch_refuses_a_non_empty_destination_and_detects_corruption(reg: Registry, artifacts: Path, tmp_path: Path):
    v = reg.register("ranking", artifacts, {}, run_id="a")
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "old.pt").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="not empty"):
        reg.fetch("ranking", v, stale)
    (tmp_path / "registry/ranking/versions/v1/model.pt").write_bytes(b"tampered")
    with pytest.raises(OSError, match="sha256"):
        reg.fetch("ranking", v, tmp_path / "fresh")


def test_promotion_checks_the_expected_files_before_moving_the_pointer(reg: Registry, artifacts: Path):
    from components.artifacts import tree_digests

    gated = tree_digests(artifacts)
    v1 = reg.register("ranking", artifacts, {}, run_id="a")
    reg.promote("ranking", v1, "first", expect_files=gated)
    (artifacts / "model.pt").write_bytes(b"other weights")
    v2 = reg.register("ranking", artifacts, {}, run_id="b")
    with pytest.raises(ValueError, match=r"ranking v2 does not hold the files expected of it: model\.pt \("):
        reg.promote("ranking", v2, "second", expect_files=gated)
    with pytest.raises(ValueError, match="missing.pt"):
        reg.check_files("ranking", v1, {**gated, "missing.pt": "0" * 64})
    assert reg.champion("ranking").version == 1
    assert [e["version"] for e in reg.history("ranking")] == [1]  # the refused promotion left no trace


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path, artifacts: Path):
    n = 16
    # every registrant lists the versions before any of them claims one, so all start from the same candidate
    # number: the race is certain, not left to the scheduler
    listed = threading.Barrier(n, timeout=30)
    got: list[int] = []
    errors: list[BaseException] = []

    def register(i: int) -> None:
        reg = Registry(tmp_path / "registry")  # one registry object per "trainer", as separate processes would have
        list_versions = reg.storage.list
        reg.storage.list = lambda prefix: (list_versions(prefix), listed.wait())[0]
        try:
            got.append(reg.register("ranking", artifacts, {"i": float(i)}, run_id=f"run-{i}"))
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got) == list(range(1, n + 1))
    infos = Registry(tmp_path / "registry").versions("ranking")
    assert sorted(i.run_id for i in infos) == sorted(f"run-{i}" for i in range(n))


def test_history_records_decisions_and_promotions(reg: Registry, artifacts: Path):
    v1 = reg.register("ranking", artifacts, {"hit@3_repin": 0.40}, run_id="a")
    first = decide(
        {"hit@3_repin": 0.40, "recall@10": 0.2, "recall@100": 0.5, "hit@3_click": 0.3, "hit@3_hide": 0.1}, None
    )
    reg.record("ranking", {"version": v1, **first.to_dict()})
    reg.promote("ranking", v1, "no champion yet")
    v2 = reg.register("ranking", artifacts, {"hit@3_repin": 0.30}, run_id="b")
    worse = decide({**first.challenger, "hit@3_repin": 0.30}, first.challenger)
    reg.record("ranking", {"version": v2, **worse.to_dict()})

    h = reg.history("ranking")
    assert [(e["event"], e["version"]) for e in h] == [("decision", 1), ("promotion", 1), ("decision", 2)]
    assert h[0]["deploy"] is True and h[2]["deploy"] is False
    assert h[1]["previous"] is None and h[1]["reason"] == "no champion yet"
    assert all(e["at"] for e in h)
    assert reg.champion("ranking").version == 1  # a rejection leaves the champion alone


def test_uris(tmp_path: Path):
    assert isinstance(storage_for(tmp_path), LocalStorage)
    assert storage_for(f"file://{tmp_path}").root == tmp_path
    assert storage_for(str(tmp_path)).root == tmp_path
    s3 = storage_for("s3://models/homefeed/registry/", client=object())
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("models", "homefeed/registry")
    for bad, msg in [("", "non-empty"), ("s3:///x", "no bucket"), ("gs://b/x", "unsupported scheme 'gs'")]:
        with pytest.raises(ValueError, match=msg):
            Registry(bad)
    with pytest.raises(ValueError, match="must be local"):
        Registry("file://otherhost/x")


# -- S3: the calls the backend makes, checked with botocore's Stubber (no network) ------------------------------


def _s3():
    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s", endpoint_url="http://s3.test"
    )
    return client, Stubber(client)


def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def test_s3_claim_is_a_conditional_put_and_a_taken_slot_is_refused():
    client, stub = _s3()
    s = S3Storage("bkt", "reg", client=client)
    key = {"Bucket": "bkt", "Key": "reg/ranking/versions/v1/.claim", "Body": b"", "IfNoneMatch": "*"}
    stub.add_response("put_object", {}, key)
    stub.add_client_error("put_object", "PreconditionFailed", http_status_code=412, expected_params=key)
    with stub:
        assert s.claim("ranking/versions/v1") is True
        assert s.claim("ranking/versions/v1") is False
    stub.assert_no_pending_responses()


def test_s3_list_returns_direct_children():
    client, stub = _s3()
    s = S3Storage("bkt", "reg", client=client)
    stub.add_response(
        "list_objects_v2",
        {
            "CommonPrefixes": [{"Prefix": "reg/ranking/versions/v1/"}, {"Prefix": "reg/ranking/versions/v2/"}],
            "Contents": [],
            "IsTruncated": False,
        },
        {"Bucket": "bkt", "Prefix": "reg/ranking/versions/", "Delimiter": "/"},
    )
    with stub:
        assert s.list("ranking/versions") == ["v1", "v2"]


def test_s3_get_of_a_missing_key_is_file_not_found():
    client, stub = _s3()
    s = S3Storage("bkt", "reg", client=client)
    stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    stub.add_client_error("head_object", "404", http_status_code=404)
    with stub:
        with pytest.raises(FileNotFoundError, match="s3://bkt/reg/ranking/champion.json"):
            s.get("ranking/champion.json")
        assert s.exists("ranking/champion.json") is False


def test_s3_append_retries_when_another_writer_got_in_between():
    client, stub = _s3()
    s = S3Storage("bkt", "reg", client=client)
    k = "reg/ranking/history.jsonl"
    stub.add_response("get_object", {"Body": _body(b"a\n"), "ETag": '"e1"'}, {"Bucket": "bkt", "Key": k})
    stub.add_client_error(
        "put_object",
        "PreconditionFailed",
        http_status_code=412,
        expected_params={"Bucket": "bkt", "Key": k, "Body": b"a\nc\n", "IfMatch": '"e1"'},
    )
    stub.add_response("get_object", {"Body": _body(b"a\nb\n"), "ETag": '"e2"'}, {"Bucket": "bkt", "Key": k})
    stub.add_response("put_object", {}, {"Bucket": "bkt", "Key": k, "Body": b"a\nb\nc\n", "IfMatch": '"e2"'})
    with stub:
        s.append("ranking/history.jsonl", b"c\n")
    stub.assert_no_pending_responses()


def test_s3_registry_register_writes_artifacts_then_version_json_last(artifacts: Path):
    client, stub = _s3()
    reg = Registry("s3://bkt/reg", client=client)
    versions = {"Bucket": "bkt", "Prefix": "reg/ranking/versions/", "Delimiter": "/"}
    stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)  # champion.json: none yet
    stub.add_response(
        "list_objects_v2", {"CommonPrefixes": [{"Prefix": "reg/ranking/versions/v1/"}], "IsTruncated": False}, versions
    )
    # v2 was claimed by someone else meanwhile: step over to v3
    claim = {"Bucket": "bkt", "Body": b"", "IfNoneMatch": "*"}
    stub.add_client_error(
        "put_object",
        "PreconditionFailed",
        http_status_code=412,
        expected_params={**claim, "Key": "reg/ranking/versions/v2/.claim"},
    )
    stub.add_response("put_object", {}, {**claim, "Key": "reg/ranking/versions/v3/.claim"})
    stub.add_response("put_object", {}, {"Bucket": "bkt", "Key": "reg/ranking/versions/v3/model.pt", "Body": ANY})
    stub.add_response(
        "put_object", {}, {"Bucket": "bkt", "Key": "reg/ranking/versions/v3/sub/config.json", "Body": ANY}
    )
    stub.add_response("put_object", {}, {"Bucket": "bkt", "Key": "reg/ranking/versions/v3/version.json", "Body": ANY})
    with stub:
        assert reg.register("ranking", artifacts, {"hit@3_repin": 0.4}, run_id="r") == 3
    stub.assert_no_pending_responses()


def test_s3_registry_promote_checks_the_version_then_writes_the_pointer():
    client, stub = _s3()
    reg = Registry("s3://bkt/reg", client=client)
    record = {
        "name": "ranking",
        "version": 3,
        "metrics": {},
        "created_at": "t",
        "run_id": "r",
        "parent": None,
        "files": {},
    }
    stub.add_response(
        "get_object",
        {"Body": _body(json.dumps(record).encode())},
        {"Bucket": "bkt", "Key": "reg/ranking/versions/v3/version.json"},
    )
    stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)  # no previous champion
    stub.add_response("put_object", {}, {"Bucket": "bkt", "Key": "reg/ranking/champion.json", "Body": ANY})
    stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)  # history.jsonl: first entry
    stub.add_response(
        "put_object", {}, {"Bucket": "bkt", "Key": "reg/ranking/history.jsonl", "Body": ANY, "IfNoneMatch": "*"}
    )
    with stub:
        reg.promote("ranking", 3, "gate passed")
    stub.assert_no_pending_responses()
