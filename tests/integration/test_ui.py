"""The homefeed page (`homefeed ui`, serving/ui) on the tiny world's artifacts: the app in a uvicorn thread, the real
retrieval and ranking servers as processes, actions through the real stream processor; the API with httpx and the
page itself in headless Chromium driven by Selenium.

Set HOMEFEED_UI_SCREENSHOT=path.png to keep a picture of the page (the one in docs/experiments.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn
from click.testing import CliRunner

from components.cluster.launcher import free_ports
from components.data.contracts import ACTIONS
from components.features.sequence import ActionLog
from homefeed.context import Ctx
from homefeed.ui.report import latest_report
from homefeed.ui.stack import Artifacts, ui_app
from homefeed.ui_command import ui
from pipelines.local import LocalRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver: Selenium Manager must not download one
SCREENSHOT_ENV = "HOMEFEED_UI_SCREENSHOT"
REPORT = """# experiment ui-test

| arm | users | repins |
|---|---|---|
| control | 10 | 0.50 |
| treatment | 11 | 0.62 |
"""


def _digest(folder: Path) -> dict[str, str]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@contextlib.contextmanager
def _serve(app) -> Iterator[str]:
    """The app on a free loopback port in a uvicorn thread, yielding its URL; stopped at exit."""
    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the ui app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def page(tiny_artifacts, tmp_path_factory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("ui")
    report = root / "experiments" / "ui-test" / "run" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text(REPORT)
    artifacts = Artifacts(**{k: tiny_artifacts[k] for k in ("features", "retrieval", "ranking", "index")},
                          dataset=tiny_artifacts["data"])  # fmt: skip
    features_before = _digest(tiny_artifacts["features"])
    with (
        ui_app(artifacts, root / "work", "http://127.0.0.1:8000", root / "experiments") as app,
        _serve(app) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield {"url": url, "client": client, "artifacts": tiny_artifacts, "report": report,
               "features_before": features_before}  # fmt: skip


@pytest.fixture(scope="module")
def active_users(page) -> list[int]:
    """Users with a profile and at least 3 actions in their sequence, ascending: each test acts on its own."""
    users = pd.read_parquet(page["artifacts"]["data"] / "users.parquet")
    events = pd.read_parquet(page["artifacts"]["data"] / "events.parquet")
    acted = events[events["action"].isin(["click", "repin", "hide"])].groupby("user_id").size()
    known = set(users.loc[users["segment"] != "new", "user_id"])
    return sorted(u for u, n in acted.items() if n >= 3 and u in known)[:5]


def test_user_has_declared_interests_and_online_sequence(page, active_users):
    user_id = active_users[0]
    data = page["artifacts"]["data"]
    users = pd.read_parquet(data / "users.parquet").set_index("user_id")
    names = pd.read_parquet(data / "interests.parquet").set_index("interest_id")["name"]
    events = pd.read_parquet(data / "events.parquet")

    got = page["client"].get(f"/api/users/{user_id}").raise_for_status().json()

    assert got["segment"] == users.loc[user_id, "segment"]
    declared = sorted(int(i) for i in users.loc[user_id, "declared_interests"])
    assert [i["interest_id"] for i in got["interests"]] == declared
    assert [i["name"] for i in got["interests"]] == [names[i] for i in declared]
    # the online sequence is the offline definition at the world's end, newest first
    want = ActionLog(events).sequences_at([user_id], [int(events["ts"].max()) + 1])
    n = int(want.lengths[0])
    assert n >= 3
    assert [(a["pin_id"], a["action"], a["ts"]) for a in got["sequence"]] == [
        (int(p), ACTIONS[int(c)], int(t))
        for p, c, t in zip(want.pin_ids[0][:n], want.actions[0][:n], want.ts[0][:n], strict=True)
    ]
    pin_interest = pd.read_parquet(data / "pins.parquet", columns=["pin_id", "interest_id"]).set_index("pin_id")
    assert all(a["interest"] == names[pin_interest.loc[a["pin_id"], "interest_id"]] for a in got["sequence"])


def test_feed_has_candidates_by_source_and_head_scores(page, active_users):
    got = page["client"].get(f"/api/users/{active_users[1]}/feed", params={"n": 10}).raise_for_status().json()

    assert got["mode"] == "personalized"
    retrieved = {c["pin_id"]: c for c in got["retrieved"]}
    assert len(retrieved) == got["candidates"] == 200
    assert all(c["source"] and c["interest"] for c in got["retrieved"])
    assert sum(got["sources"].values()) == len(retrieved)
    pins = got["pins"]
    assert len(pins) == 10 and {p["pin_id"] for p in pins} <= set(retrieved)
    for p in pins:
        assert all(0.0 <= p[head] <= 1.0 for head in ("click", "repin", "hide"))
        # ranking's blend: repin + 0.5 click - hide
        assert p["score"] == pytest.approx(p["repin"] + 0.5 * p["click"] - p["hide"], abs=1e-5)
        assert (p["source"], p["interest_id"]) == (
            retrieved[p["pin_id"]]["source"],
            retrieved[p["pin_id"]]["interest_id"],
        )
    assert [p["score"] for p in pins] == sorted((p["score"] for p in pins), reverse=True)


def test_hiding_the_top_pin_removes_it_from_the_feed(page, active_users):
    client, user_id = page["client"], active_users[2]
    before = client.get(f"/api/users/{user_id}/feed").raise_for_status().json()
    top = before["pins"][0]["pin_id"]
    world_end = client.get("/api/config").raise_for_status().json()["world_end_ts"]

    acted = client.post(
        "/api/actions", json={"user_id": user_id, "pin_id": top, "action": "hide", "request_id": before["request_id"]}
    ).raise_for_status().json()  # fmt: skip

    assert acted["outcome"] == "applied"
    after = client.get(f"/api/users/{user_id}/feed").raise_for_status().json()
    assert top not in {p["pin_id"] for p in after["pins"]}
    assert top not in {c["pin_id"] for c in after["retrieved"]}
    assert after["hidden_excluded"] >= 1
    head = client.get(f"/api/users/{user_id}").raise_for_status().json()["sequence"][0]
    assert (head["pin_id"], head["action"]) == (top, "hide")
    assert head["ts"] > world_end


def test_bad_input_gets_a_clear_error(page, active_users):
    client, user_id = page["client"], active_users[3]
    sequence = client.get(f"/api/users/{user_id}").raise_for_status().json()["sequence"]
    for path in ("/api/users/999999", "/api/users/999999/feed"):
        response = client.get(path)
        assert response.status_code == 404 and "user 999999 is not in the dataset" in response.json()["error"]
    unknown_user = client.post("/api/actions", json={"user_id": 999999, "pin_id": 1, "action": "hide"})
    assert unknown_user.status_code == 404
    unknown_pin = client.post("/api/actions", json={"user_id": user_id, "pin_id": 10**9, "action": "hide"})
    assert unknown_pin.status_code == 404 and "pin 1000000000" in unknown_pin.json()["error"]
    like = client.post("/api/actions", json={"user_id": user_id, "pin_id": 1, "action": "like"})
    assert like.status_code == 400 and "click, repin, hide" in like.json()["error"]
    too_many = client.get(f"/api/users/{user_id}/feed", params={"n": 5000})
    assert too_many.status_code == 400 and "n must be at most" in too_many.json()["error"]
    # none of the refused actions reached the online store
    assert client.get(f"/api/users/{user_id}").raise_for_status().json()["sequence"] == sequence


def test_a_request_for_another_host_name_is_refused(page, active_users):
    """DNS rebinding: a page on evil.example whose name now points here would send Host: evil.example."""
    client, user_id = page["client"], active_users[0]
    assert client.get(f"/api/users/{user_id}", headers={"host": "localhost"}).status_code == 200
    for path in ("/", f"/api/users/{user_id}"):
        assert client.get(path, headers={"host": "evil.example"}).status_code == 400
    refused = client.post("/api/actions", json={"user_id": user_id, "pin_id": 1, "action": "hide"},
                          headers={"host": "evil.example:8503"})  # fmt: skip
    assert refused.status_code == 400


def test_links_to_dashboard_and_latest_report(page):
    config = page["client"].get("/api/config").raise_for_status().json()
    assert config["dashboard_url"] == "http://127.0.0.1:8000"
    assert config["report"]["path"] == str(page["report"])
    html = page["client"].get("/report").raise_for_status().text
    assert "<table>" in html and "<td>treatment</td>" in html


def test_latest_report_is_the_newest_and_none_without_one(tmp_path):
    assert latest_report(tmp_path / "absent") is None
    older, newer = (tmp_path / name / "run" / "report.md" for name in ("a", "b"))
    for path, mtime in ((newer, 2_000_000_000), (older, 1_000_000_000)):
        path.parent.mkdir(parents=True)
        path.write_text("# r\n")
        os.utime(path, (mtime, mtime))
    assert latest_report(tmp_path) == newer


def test_command_names_missing_artifacts(tmp_path, tiny_artifacts):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    LocalRun(
        "r1", run_dir, "homefeed_training", {}, artifacts={"dataset": {"path": str(tiny_artifacts["data"])}}
    ).save()
    runner = CliRunner()

    no_outputs = runner.invoke(ui, ["--run", str(run_dir)], obj=Ctx(None))
    assert no_outputs.exit_code == 2
    assert "feature_store, retrieval_model, ranking_model, pin_index" in no_outputs.output

    not_a_run = runner.invoke(ui, ["--run", str(tmp_path)], obj=Ctx(None))
    assert not_a_run.exit_code == 2 and "holds no pipeline run" in not_a_run.output

    empty = tmp_path / "empty"
    empty.mkdir()
    dirs = {"dataset": tiny_artifacts["data"], "retrieval": empty} | {
        k: tiny_artifacts[k] for k in ("features", "ranking", "index")
    }
    args = [arg for name, path in dirs.items() for arg in (f"--{name}", str(path))]
    missing = runner.invoke(ui, args, obj=Ctx(None))
    assert missing.exit_code == 2 and f"retrieval {empty / 'model.pt'}" in missing.output


def _chrome():
    """A headless Chromium through the system chromedriver, or a skip naming the missing Debian package."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian package chromium, which .ci/run installs)")
    if not Path(CHROMEDRIVER).exists():
        pytest.skip(f"{CHROMEDRIVER} is missing (Debian package chromium-driver, which .ci/run installs)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--no-first-run", "--disable-background-networking", "--disable-component-update"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_page_hides_a_pin_in_the_browser(page, active_users):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    user_id = active_users[4]
    driver = _chrome()
    try:
        # the page replaces its tiles when a feed arrives: an element read mid-render is stale, and read again
        wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))
        driver.get(page["url"])
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#user-list option"))  # the page's settings loaded
        driver.find_element(By.ID, "user-input").send_keys(str(user_id))
        driver.find_element(By.ID, "show-user").click()
        tiles = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#feed .tile"))
        assert driver.find_element(By.CSS_SELECTOR, "#user-panel h2").text == f"user {user_id}"
        assert driver.find_elements(By.CSS_SELECTOR, "#sequence tr[data-pin-id]")
        pin = tiles[0].get_attribute("data-pin-id")

        tiles[0].find_element(By.CSS_SELECTOR, "button.hide").click()

        def feed_without_pin(d):
            shown = [t.get_attribute("data-pin-id") for t in d.find_elements(By.CSS_SELECTOR, "#feed .tile")]
            return shown if shown and pin not in shown else False

        shown = wait.until(feed_without_pin)
        assert pin not in shown
        newest = driver.find_element(By.CSS_SELECTOR, "#sequence tr[data-pin-id]")
        assert newest.get_attribute("data-pin-id") == pin and "hide" in newest.text
        assert not driver.find_element(By.ID, "error").is_displayed()
        if os.environ.get(SCREENSHOT_ENV):
            assert driver.save_screenshot(os.environ[SCREENSHOT_ENV])
    finally:
        driver.quit()


def test_actions_never_touch_the_runs_feature_repository(page):
    """Last in the module, after every action: they went to the working copy, so the run's feature repository
    (its online store, its replay checkpoint) is byte for byte what it was."""
    assert _digest(page["artifacts"]["features"]) == page["features_before"]


def test_on_a_deployment_the_page_is_a_client_of_its_public_endpoints(tiny_artifacts, tiny_stack, tmp_path):
    # the feed shown is the homefeed predictor's own answer, and an action goes to the actions service's bus
    from components.cluster.launcher import HOST, start_server, stop_servers

    bus = tmp_path / "bus" / "events.jsonl"
    (port,) = free_ports(1)
    actions_url = f"http://{HOST}:{port}"
    args = ["actions", "--events", f"file:{bus}", "--dead-letter", str(tmp_path / "dead")]
    server = start_server("actions", args, actions_url, tmp_path / "actions.log")
    artifacts = Artifacts(**{k: tiny_artifacts[k] for k in ("features", "retrieval", "ranking", "index")},
                          dataset=tiny_artifacts["data"])  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _ready(f"{actions_url}/readyz"):
            assert server.process.poll() is None and time.monotonic() < deadline, "the actions service did not start"
            time.sleep(0.1)
        with (
            ui_app(
                artifacts,
                tmp_path / "work",
                "http://127.0.0.1:8000",
                tmp_path / "experiments",
                tiny_stack["retrieval"],
                tiny_stack["ranking"],
                homefeed_url=tiny_stack["homefeed"],
                actions_url=actions_url,
            ) as app,  # fmt: skip
            _serve(app) as url,
            httpx.Client(base_url=url, timeout=60) as client,
        ):
            shown = client.get("/api/users/1/feed").raise_for_status().json()
            direct = httpx.post(f"{tiny_stack['homefeed']}/v1/models/homefeed:predict",
                                json={"instances": [{"user_id": 1}]}, timeout=60).json()["predictions"][0]  # fmt: skip
            assert [p["pin_id"] for p in shown["pins"]] == [p["pin_id"] for p in direct["pins"]]
            assert shown["retrieved"] and shown["request_id"] != direct["request_id"]
            top = shown["pins"][0]["pin_id"]
            body = {"user_id": 1, "pin_id": top, "action": "hide", "request_id": shown["request_id"]}
            assert client.post("/api/actions", json=body).raise_for_status().json()["outcome"] == "published"
            assert client.post("/api/actions", json={**body, "action": "like"}).status_code == 400
            stop_servers([server])
            down = client.post("/api/actions", json=body)
            assert down.status_code == 503 and "did not answer" in down.json()["error"]
    finally:
        stop_servers([server])
    sent = [json.loads(line) for line in bus.read_text().splitlines()]
    assert [(e["user_id"], e["pin_id"], e["action"]) for e in sent] == [(1, top, "hide")]
    assert sent[0]["request_id"] == shown["request_id"]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
