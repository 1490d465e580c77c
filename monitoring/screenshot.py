"""A PNG of the monitoring dashboard: Evidently's UI on the workspace, rendered by a headless Chromium.

Used for the picture in docs/monitoring.md (`homefeed monitor screenshot`); the UI is the one `homefeed monitor ui` serves, so the
picture shows what a user sees. Chromium is Debian's package (`apt-get install chromium`); without it this says so.
Evidently draws its plots after the page has loaded, so Chromium is given a virtual-time budget and composites
every stage before it captures (without these flags the lines are not drawn yet).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CHROMIUM = ("chromium", "chromium-browser")


def chromium() -> str:
    """The Chromium executable, or a clear error naming the package."""
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "headless Chromium is needed for the screenshot: install Debian's package (apt-get install chromium)"
    )


def screenshot(workspace: Path, out: Path, width: int = 1400, height: int = 6000, timeout_s: float = 90) -> Path:
    """Serve `workspace` with the Evidently UI on a free loopback port, capture its project's dashboard into `out`
    (`height` is the browser window's: the page below it is not captured; the blank below the page is cropped)."""
    from components.cluster.launcher import free_ports
    from monitoring.dashboard import PROJECT

    browser = chromium()
    (port,) = free_ports(1)
    evidently = Path(sys.executable).with_name("evidently")
    ui = subprocess.Popen(
        [str(evidently), "ui", "--workspace", str(workspace), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        project = _project_id(f"http://127.0.0.1:{port}", PROJECT, ui, time.monotonic() + timeout_s)
        out = Path(out).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:  # a fresh profile; no background calls to the internet
            args = [
                browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "--run-all-compositor-stages-before-draw", "--virtual-time-budget=40000", f"--screenshot={out}",
                f"http://127.0.0.1:{port}/projects/{project}",
            ]  # fmt: skip
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"chromium could not capture the dashboard: {done.stderr[-2000:]}")
        _compact(out)
        return out
    finally:
        ui.terminate()
        ui.wait(timeout=10)


def _project_id(url: str, name: str, ui: subprocess.Popen, deadline: float) -> str:
    while True:
        try:
            projects = httpx.get(f"{url}/api/projects", timeout=2).json()
            break
        except httpx.HTTPError:
            if ui.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Evidently UI did not start on {url}") from None
            time.sleep(0.5)
    found = [p["id"] for p in projects if p["name"] == name]
    if not found:
        raise RuntimeError(f"no project {name!r} in the workspace: run `homefeed monitor run` first")
    return found[0]


def _compact(png: Path, margin: int = 24) -> None:
    """Crop the white below the page and keep 64 colours: the plots are flat colours, and the file a third the size."""
    from PIL import Image, ImageChops

    image = Image.open(png).convert("RGB")
    content = ImageChops.difference(image, Image.new("RGB", image.size, "white")).getbbox()
    if content is not None:
        image = image.crop((0, 0, image.width, min(image.height, content[3] + margin)))
    image.quantize(colors=64).save(png, optimize=True)
