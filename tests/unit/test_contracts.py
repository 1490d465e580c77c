import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from components.data import contracts
from components.data.contracts import EVENT, PIN, USER, ContractError, DeadLetter, validate
from components.data.dataset import Dataset, validate_and_write

pytestmark = pytest.mark.unit

TS = 1_767_225_600_000  # 2026-01-01 in ms


def good_events(n=4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.arange(n),
            "pin_id": np.arange(n) + 10,
            "action": ["impression", "click", "repin", "hide"][:n],
            "ts": TS + np.arange(n),
            "request_id": np.arange(n),
            "surface": "homefeed",
        }
    )


def test_good_events_pass_typed_to_schema():
    result = validate(good_events(), EVENT)
    assert result.n_rejected == 0
    assert result.valid.num_rows == 4
    assert result.valid.schema == EVENT.schema
    assert result.valid.column("action").to_pylist() == ["impression", "click", "repin", "hide"]


def _single_error(df, contract, field):
    result = validate(df, contract)
    assert result.n_rejected == 1, [r.errors for r in result.rejects]
    rej = result.rejects[0]
    assert [e["field"] for e in rej.errors] == [field]
    assert result.valid.num_rows == len(df) - 1  # the other rows are kept: nothing lost
    return rej


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("user_id", None, "missing value"),
        ("user_id", "abc", "could not be read"),
        ("user_id", 1.5, "could not be read"),
        ("pin_id", -3, "invalid value"),
        ("action", "like", "one of impression, click, repin, hide"),
        ("action", None, "missing value"),
        ("ts", 1_767_225_600, "looks like epoch seconds"),
        ("ts", 7_000_000_000_000, "out of range"),
        ("request_id", None, "missing value"),
        ("surface", "  ", "non-empty surface"),
    ],
)
def test_each_bad_event_field_is_rejected_with_row_field_and_reason(field, value, reason):
    df = good_events().astype(object)
    df.loc[2, field] = value
    rej = _single_error(df, EVENT, field)
    assert rej.row == 2
    assert reason in rej.errors[0]["reason"]
    assert rej.record[field] == value or (value is None and rej.record[field] is None)


def test_row_with_several_problems_names_each_field():
    df = good_events().astype(object)
    df.loc[1, "user_id"] = -1
    df.loc[1, "action"] = "save"
    result = validate(df, EVENT)
    assert result.n_rejected == 1
    assert {e["field"] for e in result.rejects[0].errors} == {"user_id", "action"}


def test_missing_required_column_is_a_contract_error_naming_it():
    with pytest.raises(ContractError, match="ts"):
        validate(good_events().drop(columns=["ts"]), EVENT)


def good_pins() -> pa.Table:
    return pa.table(
        {
            "pin_id": [1, 2, 3],
            "interest_id": [0, 1, 1],
            "created_ts": [TS, TS, -1_000_000_000_000],  # content may be old (1938)
            "image_signature_fine": [11, 12, 12],
            "image_signature_coarse": [21, 22, 22],
            "quality": [0.1, None, 0.9],
            "embedding": pa.array([[0.1, 0.2], [0.3, 0.4], None], pa.list_(pa.float32())),
        }
    )


def test_good_pins_pass_and_optional_fields_may_be_empty():
    result = validate(good_pins(), PIN)
    assert result.n_rejected == 0
    assert result.valid.column("quality").to_pylist() == [0.1, None, 0.9]


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("pin_id", 1, "duplicate pin_id"),
        ("quality", 1.5, "quality score in [0, 1]"),
        ("quality", float("-inf"), "could not be read"),
        ("interest_id", -1, "invalid value"),
        ("image_signature_coarse", 99, "disagrees with an earlier row"),
        ("embedding", [0.5, float("nan")], "could not be read"),
    ],
)
def test_each_bad_pin_is_rejected(field, value, reason):
    pins = good_pins().to_pylist()
    pins[2][field] = value
    rej = _single_error(pa.Table.from_pylist(pins, schema=good_pins().schema), PIN, field)
    assert rej.row == 2 and reason in rej.errors[0]["reason"]


@pytest.mark.parametrize(
    "field,value",
    [("segment", "vip"), ("declared_interests", [1, -2]), ("user_id", 0), ("signup_ts", 123)],
)
def test_each_bad_user_is_rejected(field, value):
    users = pd.DataFrame(
        {"user_id": [0, 1], "segment": ["core", "new"], "signup_ts": [TS, TS], "declared_interests": [[1], []]}
    ).astype(object)
    users.at[1, field] = value
    rej = _single_error(users, USER, field)
    assert rej.row == 1


def test_dead_letter_round_trip_keeps_row_reason_and_record(tmp_path):
    df = good_events().astype(object)
    df.loc[3, "action"] = "like"
    result = validate(df, EVENT)
    dl = DeadLetter(tmp_path)
    dl.write("events", result.rejects)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["row"] == 3 and rec["source"] == "events"
    assert rec["errors"][0]["field"] == "action"
    assert rec["record"]["action"] == "like" and rec["record"]["pin_id"] == 13


def test_dataset_write_rejects_events_with_unknown_user_or_pin(tmp_path):
    events = good_events()
    events.loc[1, "pin_id"] = 999  # not among the pins
    tables = {
        "interests": pa.table({"interest_id": [0, 1], "name": ["a", "b"]}),
        "pins": pa.table({**{c: good_pins().column(c) for c in good_pins().column_names}, "pin_id": [10, 11, 12]}),
        "users": pd.DataFrame(
            {"user_id": [0, 1, 2, 3], "segment": "core", "signup_ts": TS, "declared_interests": [[0]] * 4}
        ),
        "events": events.assign(pin_id=events["pin_id"].where(events.index != 3, 12)),
    }
    report = validate_and_write(tmp_path, tables, {"source": "test"})
    assert report.rows["events"] == 3 and report.rejected["events"] == 1
    dead = Dataset(tmp_path).dead_letter.read("events")
    assert dead[0]["row"] == 1
    assert dead[0]["errors"] == [{"field": "pin_id", "reason": "unknown pin_id: not in pins"}]
    assert Dataset(tmp_path).manifest()["rejected"]["events"] == 1


def test_categorical_and_plain_strings_validate_alike():
    plain = good_events()
    cat = plain.assign(action=pd.Categorical(plain["action"].where(plain.index != 0, "like")))
    assert validate(cat, EVENT).rejects[0].row == 0
    assert set(contracts.ACTIONS) == {"impression", "click", "repin", "hide"}


def test_the_shared_schema_pads_with_codes_no_real_action_uses():
    from models import schema

    assert set(schema.SEQUENCE_ACTIONS) < set(schema.ACTIONS)
    assert schema.ACTIONS[schema.PAD_ACTION] not in schema.SEQUENCE_ACTIONS  # the data's pad code: never in a sequence
    assert len(schema.ACTIONS) == schema.PAD_INDEX  # the models' pad code: one past every real action
    assert schema.PAD_PIN < 0 and schema.SEQ_LEN == 100 and schema.N_SEGMENTS == len(schema.SEGMENTS) == 4
