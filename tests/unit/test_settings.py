import pytest

from homefeed.config import load_settings

pytestmark = pytest.mark.unit


def test_defaults_then_yaml_then_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HOMEFEED_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_settings().world.n_users == 5_000  # defaults

    cfg = tmp_path / "hf.yaml"
    cfg.write_text("workspace: /data/ws\nworld:\n  n_users: 123\n  seed: 7\n")
    s = load_settings(cfg)
    assert (str(s.workspace), s.world.n_users, s.world.seed) == ("/data/ws", 123, 7)

    monkeypatch.setenv("HOMEFEED_WORLD__SEED", "9")
    s = load_settings(cfg)
    assert (s.world.n_users, s.world.seed) == (123, 9)  # env wins over YAML, YAML's other fields stay

    monkeypatch.setenv("HOMEFEED_CONFIG", str(cfg))
    assert load_settings().world.n_users == 123


def test_bad_settings_name_the_problem(tmp_path):
    cfg = tmp_path / "hf.yaml"
    cfg.write_text("world:\n  n_users: -5\n")
    with pytest.raises(ValueError, match="n_users"):
        load_settings(cfg)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_settings(tmp_path / "nope.yaml")
