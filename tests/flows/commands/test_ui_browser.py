"""The MLflow UI as a person sees it: run the micro pipeline into a fresh home, serve that
home's store with `mlflow ui` (as `vlmforge ui` does) on 127.0.0.1, and render the
registered model's page in headless Chromium. The rendered DOM must show the `champion`
alias and the champion's version tags; a screenshot is kept under test-artifacts/.

Needs Debian's `chromium` (`apt-get install chromium`); skips where it is missing.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from components.recipe import load_recipe
from flows.commands.ui import HOST, free_port, start_mlflow_ui, stop, wait_until_ready

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "configs" / "micro.yaml"
ARTIFACTS = ROOT / "test-artifacts"  # git-ignored; CI can upload it
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
BROWSER_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.slow,  # a whole `vlmforge run` and a browser: ~2 min (make test-slow)
    pytest.mark.skipif(BROWSER is None, reason="headless Chromium not found (Debian: "
                       "`apt-get install chromium`); the MLflow UI browser test needs it"),
]


def _browser(args: list[str], profile: Path) -> str:
    """Run headless Chromium (its own process group, killed on timeout); returns stdout."""
    cmd = [BROWSER, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # renderer/zygote children too
        proc.wait()
    return out


def _visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh VLMFORGE_HOME after one `vlmforge run --recipe configs/micro.yaml`."""
    home = tmp_path_factory.mktemp("ui-home")
    env = dict(os.environ, VLMFORGE_HOME=str(home), VLMFORGE_PROGRESS="0")
    for key in ("PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)  # the run's own Prefect home and MLflow store, under ``home``
    cli = Path(sys.executable).parent / "vlmforge"
    done = subprocess.run([str(cli), "run", "--recipe", str(RECIPE)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def mlflow_url(home):
    port = free_port()
    proc = start_mlflow_ui(port, f"sqlite:///{home}/mlflow.db", home / "mlartifacts")
    url = f"http://{HOST}:{port}"
    try:
        assert wait_until_ready([f"{url}/health"], [proc], timeout=180), "mlflow ui did not start"
        yield url
    finally:
        stop([proc])


def test_registered_model_page_shows_the_champion_alias_and_version_tags(mlflow_url, tmp_path):
    name = load_recipe(RECIPE).registered_model
    query = urllib.parse.urlencode({"name": name, "alias": "champion"})
    with urllib.request.urlopen(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias?{query}",
                                timeout=30) as r:
        champion = json.load(r)["model_version"]  # what the page has to show
    tags = {t["key"]: t["value"] for t in champion.get("tags", [])}
    assert {"stage", "data_version"} <= set(tags)

    page = f"{mlflow_url}/#/models/{urllib.parse.quote(name)}"
    dom = _browser(["--virtual-time-budget=15000", "--dump-dom", page], tmp_path / "profile-dom")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "mlflow_model.html").write_text(dom)
    text = _visible_text(dom)
    assert name in text, f"the model page did not render (see {ARTIFACTS / 'mlflow_model.html'})"
    assert re.search(r"@\s*champion\b", text), "no `@ champion` alias chip on the model page"
    row = re.search(rf"Version {champion['version']}\b(.*?)(?:Version \d+\b|$)", text)
    assert row, f"no row for version {champion['version']} in the versions table"
    assert f"stage : {tags['stage']}" in row.group(1)
    assert f"data_version : {tags['data_version']}" in row.group(1)
    assert re.search(r"@\s*champion\b", row.group(1)), "the alias is not on the champion's row"

    shot = ARTIFACTS / "mlflow_model.png"
    shot.unlink(missing_ok=True)
    _browser(["--virtual-time-budget=15000", "--window-size=1400,1000", "--hide-scrollbars",
              f"--screenshot={shot}", page], tmp_path / "profile-shot")
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
