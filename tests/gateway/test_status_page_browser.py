"""The status page in a real browser: Debian's chromium, driven by Playwright, against a running
gateway with two channels (one infusing, one stopped by an occlusion).

It logs in through the form, reads both cards as a person would, checks the alarm card comes
first and that the layout is one column on a phone and a grid on a wide screen, and keeps a
full-page screenshot as a test artifact (``$TEST_ARTIFACTS_DIR``, else pytest's tmp_path).

Skipped when ``/usr/bin/chromium`` is missing, unless ``REQUIRE_CHROMIUM=1`` (CI installs it and
sets that): then it fails.  One browser launch for the module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from gateway.alarm_advice import advice, pump_alarm_code
from gateway.config import build_config
from gateway.display import DOSE_DISPLAY_STEP_MG_PER_KG, shown
from gateway.timestamps import format_instant
from protocol.pump_state import PumpAlarm
from simulator.model import PumpModel
from tests.gateway import daemon_thread
from tests.gateway.model_driver import ModelDriver
from tests.gateway.test_status_page import INFUSING, OCCLUDED, READ_TOKEN, TOKEN
from tests.gateway.token_files import write_token_file

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Milliseconds Playwright waits for any one browser step.
STEP_TIMEOUT_MS = 15_000
#: Real seconds the gateway gets to reach the states the test looks at.
STATE_DEADLINE_S = 30.0
#: The daemon polls its pumps this often (real seconds): the page reloads every 3 s.
POLL_INTERVAL_S = 0.5
BEARER = {"Authorization": f"Bearer {READ_TOKEN}"}


def _chromium() -> Path:
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing (apt-get install --no-install-recommends chromium)"
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"REQUIRE_CHROMIUM=1 but {why}")
        pytest.skip(why)
    return CHROMIUM


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Until ``condition()``: a daemon on real time, so poll with a deadline."""
    deadline = time.monotonic() + STATE_DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The gateway as ``run`` starts it, each channel on a model pump of its own; bed2's pump
    reports an occlusion once both infuse.  Yields the API's address and the channels' JSON."""
    tmp = tmp_path_factory.mktemp("ward")
    now_s = time.time()
    channels = [
        {**INFUSING, "randomised_at": format_instant(now_s - 600.0)},
        {
            **OCCLUDED,
            "randomised_at": format_instant(now_s - 600.0),
            "titer_measured_at": format_instant(now_s - 900.0),
        },
    ]
    config = build_config(
        {
            "state_dir": str(tmp / "state"),
            "control": {"poll_interval_s": POLL_INTERVAL_S},
            "api": {
                "listen": "127.0.0.1:0",
                "token_file": str(write_token_file(tmp / "token", TOKEN)),
                "read_token_file": str(write_token_file(tmp / "read-token", READ_TOKEN)),
            },
            "channels": channels,
        }
    )
    drivers: list[ModelDriver] = []

    def own_pump(shared: PumpModel) -> ModelDriver:
        # running_daemon gives every channel one shared model pump: here each gets its own.
        model = PumpModel(shared.clock, max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
        drivers.append(ModelDriver(model))
        return drivers[-1]

    with pytest.MonkeyPatch.context() as patch:
        # running_daemon gives every channel one shared model pump: here each gets its own.
        patch.setattr(daemon_thread, "ModelDriver", own_pump)
        with (
            daemon_thread.running_daemon(config) as info,
            httpx.Client(base_url=f"http://{info['api']}", timeout=5.0) as api,
        ):

            def states() -> dict[str, str]:
                body = api.get("/v1/channels", headers=BEARER).json()
                return {c["id"]: c["state"] for c in body["channels"]}

            _wait_for(lambda: set(states().values()) == {"infusing"}, "both channels infusing")
            bed2 = drivers[[c["id"] for c in channels].index(OCCLUDED["id"])]
            bed2.model.inject(PumpAlarm.OCCLUSION)
            _wait_for(lambda: states()[OCCLUDED["id"]] == "alarm", "bed2 in alarm")
            yield {"base": f"http://{info['api']}", "api": api}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One chromium for the module, with a fresh user-data dir."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(executable),
            args=CHROMIUM_ARGS,
            headless=True,
            timeout=STEP_TIMEOUT_MS * 2,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(STEP_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


def _cards(page: Any) -> list[dict[str, Any]]:
    """Every card's id, text and box, read in one step (the page reloads itself every few
    seconds: a read that a reload interrupts is read again)."""
    from playwright.sync_api import Error

    script = """els => els.map(e => {
        const box = e.getBoundingClientRect();
        return {id: e.id, cls: e.className, text: e.innerText, top: box.top, left: box.left,
                bottom: box.bottom};
    })"""
    for _attempt in range(3):
        try:
            page.wait_for_selector("article.card")
            cards: list[dict[str, Any]] = page.eval_on_selector_all("article.card", script)
            return cards
        except Error as exc:
            if "destroyed" not in str(exc) and "navigat" not in str(exc):
                raise
    raise AssertionError("the page kept reloading while its cards were read")


def _artifact_dir(tmp_path: Path) -> Path:
    where = os.environ.get("TEST_ARTIFACTS_DIR")
    directory = Path(where) if where else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.mark.hazard("H-UN-04")
def test_login_then_both_cards_with_the_alarm_first(
    browser: Any, ward: dict[str, Any], tmp_path: Path
) -> None:
    snapshots = {
        c["id"]: c for c in ward["api"].get("/v1/channels", headers=BEARER).json()["channels"]
    }
    page = browser.new_page()
    try:
        page.goto(ward["base"] + "/")
        assert page.url == ward["base"] + "/login"  # sent to the form
        page.fill("#token", READ_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(ward["base"] + "/")
        cards = _cards(page)
        assert [c["id"] for c in cards] == ["channel-bed2", "channel-bed1"]
        alarm, infusing = cards
        assert "card--needs-person" in alarm["cls"]
        assert "card--needs-person" not in infusing["cls"]
        occlusion = advice(pump_alarm_code(PumpAlarm.OCCLUSION))
        for words in (
            "Bed ICU-2",
            "Alarm: pump stopped",
            "NEEDS A PERSON",
            "Alarm: Occlusion",
            occlusion.action,
            "not infusing",
        ):
            assert words in alarm["text"], words
        for words in ("Bed ICU-1", "Infusing", "Day 1 of 3", "14.58 mL/h", "28.00 mL/h"):
            assert words in infusing["text"], words
        for card in cards:
            snap = snapshots[card["id"].removeprefix("channel-")]
            (today,) = snap["days"]
            dose = shown(today["dose_mg_per_kg"], "mg/kg", DOSE_DISPLAY_STEP_MG_PER_KG)
            assert f"{dose} = {shown(today['prescribed_ml'], 'mL')}" in card["text"]
        # Wide screen: a grid, the two cards side by side.
        assert alarm["top"] == infusing["top"]
        assert alarm["left"] < infusing["left"]
        shot = _artifact_dir(tmp_path) / "status-page.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"status page screenshot: {shot}")
        with Image.open(shot) as image:
            image.verify()
        with Image.open(shot) as image:
            assert image.format == "PNG"
            assert image.width == 1280
            assert image.height >= 400
        # A phone: one column, the alarm card on top.
        page.set_viewport_size({"width": 390, "height": 844})
        alarm, infusing = _cards(page)
        assert alarm["bottom"] <= infusing["top"]
        assert alarm["left"] == infusing["left"]
    finally:
        page.close()
