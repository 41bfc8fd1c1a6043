"""The status page (``GET /``): two channels, one infusing and one in alarm, as cards with the
snapshot's numbers; hostile labels escaped; and every way in and out of the page's login."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.alarm_advice import ADVICE, JOURNAL_FAILED_CODE, advice, pump_alarm_code
from gateway.api import create_app
from gateway.api_guard import MAX_BODY_BYTES
from gateway.config import build_config
from gateway.course_state import AlarmCode
from gateway.daemon import Gateway
from gateway.display import DOSE_DISPLAY_STEP_MG_PER_KG, shown
from gateway.page_session import SESSION_COOKIE, SESSION_MAX_AGE_S, PageSessions
from gateway.status_page import ago, card
from gateway.tokens import TokenSource
from protocol.clock import ManualClock
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm
from simulator.model import PumpModel
from tests.gateway.conftest import API_CHANNEL, RANDOMISED_AT, model_gateway
from tests.gateway.model_driver import ModelDriver
from tests.gateway.token_files import write_token_file

TOKEN = "status-page-write-token-0123456789-abcdef"
READ_TOKEN = "status-page-read-token-0123456789-abcdefg"
BEARER = {"Authorization": f"Bearer {READ_TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DOCS = Path(__file__).resolve().parents[2] / "docs"

#: The two channels the page tests (and the browser test) show: a flat-arm patient infusing in
#: bed ICU-1, and a titer-arm patient in ICU-2 whose pump will report an occlusion.
INFUSING = {
    "id": "bed1",
    "pump": "modbus+tcp://127.0.0.1:1",
    "arm": "flat",
    "weight_kg": 70.0,
    "randomised_at": RANDOMISED_AT,
    "bed": "ICU-1",
}
OCCLUDED = {
    **API_CHANNEL,
    "id": "bed2",
    "pump": "modbus+tcp://127.0.0.1:2",
    "bed": "ICU-2",
    "patient_id": "P-0002",
}


@dataclass
class Ward:
    gateway: Gateway
    clock: ManualClock
    pumps: dict[str, PumpModel]

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            asyncio.run(self.gateway.tick())
            self.clock.advance(self.gateway.poll_interval_s)


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ward]:
    """Two channels, each on a pump of its own: bed1 infusing, bed2 stopped by an occlusion.
    One for the module: the tests only read it (its clock stands still between them)."""
    clock = ManualClock()
    pumps: dict[str, PumpModel] = {}

    def own_pump(url: str) -> ModelDriver:
        pumps[url] = PumpModel(clock, max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
        return ModelDriver(pumps[url])

    config = build_config(
        {
            "state_dir": str(tmp_path_factory.mktemp("ward") / "state"),
            "control": {"poll_interval_s": 60.0},
            "channels": [INFUSING, OCCLUDED],
        }
    )
    ward = Ward(Gateway(config, clock=clock, driver_factory=own_pump), clock, pumps)
    ward.run(10)  # ten minutes of both infusing
    pumps[OCCLUDED["pump"]].inject(PumpAlarm.OCCLUSION)
    ward.run(2)
    yield ward
    asyncio.run(ward.gateway.shutdown("test over"))


@pytest.fixture
def app(ward: Ward) -> FastAPI:
    return create_app(ward.gateway, TOKEN, read_token=READ_TOKEN)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


class Cards(HTMLParser):
    """The page's cards in order: each card's id, classes, ``data-field`` texts and alarm codes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.cards: list[dict[str, Any]] = []
        self._field: str | None = None
        self._depth = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "article":
            self.cards.append(
                {"id": found["id"], "class": found["class"], "fields": {}, "alarms": []}
            )
        if self._field is not None:
            self._depth += 1
        elif "data-field" in found:
            self._field, self._depth = found["data-field"], 1
            self.cards[-1]["fields"][self._field] = ""
        if "data-code" in found:
            self.cards[-1]["alarms"].append(found["data-code"])

    def handle_endtag(self, tag: str) -> None:
        if self._field is not None:
            self._depth -= 1
            if self._depth == 0:
                self._field = None

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            fields = self.cards[-1]["fields"]
            fields[self._field] = " ".join(f"{fields[self._field]} {data}".split())

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {c["id"].removeprefix("channel-"): c for c in self.cards}


def _cookie(response: Any) -> str:
    header = response.headers.get("set-cookie", "")
    assert header.startswith(f"{SESSION_COOKIE}="), header
    return header


def _login(client: TestClient, token: str) -> Any:
    return client.post("/login", content=f"token={token}", headers=FORM)


# -- what the page shows ---------------------------------------------------------------------


@pytest.mark.hazard("H-UN-04")
def test_both_cards_show_the_snapshot_numbers_and_the_alarm_first(client: TestClient) -> None:
    page = client.get("/", headers=BEARER)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    cards = Cards(page.text)
    assert [c["id"] for c in cards.cards] == ["channel-bed2", "channel-bed1"]  # alarm first
    snapshots = client.get("/v1/channels", headers=BEARER).json()["channels"]
    shown_cards = cards.by_id()
    for snap in snapshots:
        fields = shown_cards[snap["id"]]["fields"]
        (today,) = snap["days"]
        assert fields["dose"] == shown(
            today["dose_mg_per_kg"], "mg/kg", DOSE_DISPLAY_STEP_MG_PER_KG
        )
        assert fields["dose-ml"] == shown(today["prescribed_ml"], "mL")
        assert fields["delivered"] == shown(today["delivered_ml"], "mL")
        assert fields["ceiling"] == shown(snap["ceiling_ml_per_h"], "mL/h")
    infusing, alarm = shown_cards["bed1"], shown_cards["bed2"]
    # The numbers a pharmacist checks, written out: 250 mg/kg x 70 kg / 50 mg/mL = 350 mL.
    assert infusing["fields"]["dose"] == "250.0 mg/kg"
    assert infusing["fields"]["dose-ml"] == "350.00 mL"
    assert infusing["fields"]["rate"] == "14.58 mL/h"
    assert infusing["fields"]["ceiling"] == "28.00 mL/h"
    assert infusing["fields"]["titer"] == "not used (flat arm)"
    assert infusing["fields"]["shortfall"] == "none"
    assert alarm["fields"]["dose"] == "265.4 mg/kg"
    assert alarm["fields"]["dose-ml"] == "371.58 mL"
    assert alarm["fields"]["rate"] == "not infusing"
    assert alarm["fields"]["titer"].startswith("IgM 30 mg/dL, hematocrit 0.35")
    # 11 min at 14.58 mL/h = 2.673 mL by the pump's totalizer, rounded down.
    assert infusing["fields"]["delivered"] == "2.67 mL"
    assert "card--needs-person" in alarm["class"]
    assert "card--needs-person" not in infusing["class"]
    assert alarm["alarms"] == ["pump_occlusion"]
    assert infusing["alarms"] == []
    text = page.text
    occlusion = advice(pump_alarm_code(PumpAlarm.OCCLUSION))
    assert "Alarm: Occlusion" in text
    assert occlusion.action in text
    assert "pump reports occlusion" in text
    assert "Needs a person:" in text
    assert "Bed ICU-2" in text
    assert "Bed ICU-1" in text
    assert "patient P-0002" in text
    assert re.search(r"Last pump reply.*\(1 min ago\)", text, re.S)


def test_page_reloads_itself_and_is_never_cached(client: TestClient) -> None:
    page = client.get("/", headers=BEARER)
    # Poll interval 60 s, bounded to 10 s.
    assert '<meta http-equiv="refresh" content="10">' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text
    css = client.get("/status.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert ".card--needs-person" in css.text


def test_hostile_labels_and_details_are_escaped(ward: Ward, client: TestClient) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    gateway = ward.gateway
    configured = gateway.config
    channels = [c.model_copy(update={"bed": hostile}) for c in configured.channels]
    gateway.config = configured.model_copy(update={"channels": channels})
    try:
        page = client.get("/", headers=BEARER).text
    finally:
        gateway.config = configured
    assert "<script>" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


def test_a_channel_without_an_order_reads_as_waiting(tmp_path: Path) -> None:
    gateway = model_gateway(tmp_path, {"id": "bed3", "pump": "modbus+tcp://127.0.0.1:3"})
    try:
        asyncio.run(gateway.tick())
        (snapshot,) = gateway.snapshots()
        waiting = card(snapshot, None, gateway.clock.wall())
    finally:
        asyncio.run(gateway.shutdown("test over"))
    assert waiting.look.words == "Waiting for an order"
    assert waiting.label == "Channel bed3"
    assert (waiting.day_text, waiting.order_text, waiting.dose_ml) == (
        "Not started",
        "No order yet",
        "-",
    )
    assert waiting.attention == 2


def test_every_alarm_code_has_what_to_do_and_is_in_the_manuals() -> None:
    codes = {
        *(code.value for code in AlarmCode),
        *(pump_alarm_code(alarm) for alarm in STOPPING_ALARMS),
        JOURNAL_FAILED_CODE,
    }
    assert codes <= set(ADVICE)
    operations = (DOCS / "operations.md").read_text()
    assert [code for code in ADVICE if f"`{code}`" not in operations] == []
    # docs/bedside.md's table says what each alarm's name on the page means, in the same words.
    bedside = (DOCS / "bedside.md").read_text()
    rows = {code: f"| {a.title} | `{code}` | {a.meaning} |" for code, a in ADVICE.items()}
    assert [row for row in rows.values() if row not in bedside] == []
    assert advice("no_such_code").action  # an unknown code still says what to do


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(-3.0, "0 s ago"), (59.9, "59 s ago"), (60.0, "1 min ago"), (3725.0, "1 h 2 min ago")],
)
def test_ago_reads_at_a_glance(seconds: float, words: str) -> None:
    assert ago(seconds) == words


# -- who may see it --------------------------------------------------------------------------


def test_without_credentials_the_page_sends_the_browser_to_the_login_form(
    client: TestClient,
) -> None:
    response = client.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "login"
    assert "set-cookie" not in response.headers
    form = client.get("/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text
    assert 'type="password"' in form.text


@pytest.mark.parametrize("token", [TOKEN, READ_TOKEN])
def test_a_bearer_token_from_a_proxy_opens_the_page(client: TestClient, token: str) -> None:
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_a_wrong_bearer_token_is_401_not_a_redirect(client: TestClient) -> None:
    response = client.get("/", headers={"Authorization": "Bearer not-the-token"})
    assert response.status_code == 401
    assert "Infusing" not in response.text


@pytest.mark.parametrize("token", [TOKEN, READ_TOKEN])
def test_login_sets_a_strict_cookie_that_is_not_the_token(client: TestClient, token: str) -> None:
    response = _login(client, token)
    assert response.status_code == 303
    assert response.headers["location"] == "./"
    cookie = _cookie(response)
    attributes = [part.strip() for part in cookie.split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert "Secure" not in attributes  # plain http: a Secure cookie would never come back
    assert token not in cookie
    page = client.get("/")  # the client sends the cookie back
    assert page.status_code == 200
    assert "Bed ICU-2" in page.text


def test_a_token_pasted_with_its_newline_logs_in(client: TestClient) -> None:
    response = client.post("/login", content=f"token={READ_TOKEN}%0A", headers=FORM)
    assert response.status_code == 303
    assert client.get("/").status_code == 200


def test_login_over_https_sets_a_secure_cookie(app: FastAPI) -> None:
    with TestClient(app, base_url="https://gateway.test", follow_redirects=False) as https:
        assert "Secure" in _cookie(_login(https, READ_TOKEN)).split("; ")
    with TestClient(app, follow_redirects=False) as behind_proxy:
        response = behind_proxy.post(
            "/login", content=f"token={READ_TOKEN}", headers={**FORM, "X-Forwarded-Proto": "https"}
        )
        assert "Secure" in _cookie(response).split("; ")


def test_a_wrong_token_at_the_login_form_is_refused_and_not_echoed(client: TestClient) -> None:
    wrong = "wrong-token-0123456789-0123456789-abcdef"
    response = _login(client, wrong)
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert "not a current token" in response.text
    assert wrong not in response.text
    assert client.get("/").status_code == 303


@pytest.mark.parametrize(
    ("body", "headers", "words"),
    [
        (f"token={READ_TOKEN}", {"Content-Type": "application/json"}, "Content-Type must be"),
        (f"token={READ_TOKEN}&token=x", FORM, "one field, token"),
        (f"tok={READ_TOKEN}", FORM, "one field, token"),
        ("token=", FORM, "one field, token"),
        (b"token=\xff", FORM, "one field, token"),
    ],
)
def test_a_malformed_login_form_is_400_naming_the_field(
    client: TestClient, body: str | bytes, headers: dict[str, str], words: str
) -> None:
    response = client.post("/login", content=body, headers=headers)
    assert response.status_code == 400
    assert words in response.text
    assert READ_TOKEN not in response.text
    assert "set-cookie" not in response.headers


@pytest.mark.hazard("H-DS-01")
def test_a_login_body_is_bounded_like_every_body(client: TestClient) -> None:
    response = client.post("/login", content="token=" + "x" * MAX_BODY_BYTES, headers=FORM)
    assert response.status_code == 413


@pytest.mark.hazard("H-AU-01")
def test_the_cookie_opens_the_page_only_never_the_api(client: TestClient) -> None:
    _login(client, TOKEN)  # even a session opened with the write token
    assert client.get("/").status_code == 200
    assert client.get("/v1/channels").status_code == 401
    ack = client.post("/v1/channels/bed2/ack", json={"operator": "x"})
    assert ack.status_code == 401


def test_a_forged_cookie_is_cleared_on_the_way_to_the_login_form(client: TestClient) -> None:
    issued = _cookie(_login(client, READ_TOKEN)).split(";")[0].split("=", 1)[1]
    stamp, mac = issued.split(".")
    forgeries = [
        f"{stamp}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # one character of the MAC
        f"{int(stamp) + 1}.{mac}",  # a later issue time with the old MAC
        READ_TOKEN,  # the token itself is not a session
        "",
    ]
    for forged in forgeries:
        client.cookies.clear()
        response = client.get("/", headers={"Cookie": f"{SESSION_COOKIE}={forged}"})
        assert response.status_code == 303, forged
        assert response.headers["location"] == "login"
        assert "Max-Age=0" in response.headers["set-cookie"]


def test_a_session_expires_after_a_shift(app: FastAPI, client: TestClient) -> None:
    sessions: PageSessions = app.state.page_sessions
    start_s = 1_800_000_000.0
    sessions.now = lambda: start_s
    _login(client, READ_TOKEN)
    sessions.now = lambda: start_s + SESSION_MAX_AGE_S
    assert client.get("/").status_code == 200
    sessions.now = lambda: start_s + SESSION_MAX_AGE_S + 1
    assert client.get("/").status_code == 303
    sessions.now = lambda: start_s - 3600  # a cookie "issued" an hour in the future
    assert client.get("/").status_code == 303


def test_a_session_made_by_another_process_is_refused(ward: Ward, client: TestClient) -> None:
    _login(client, READ_TOKEN)
    cookie = client.cookies[SESSION_COOKIE]
    restarted = create_app(ward.gateway, TOKEN, read_token=READ_TOKEN)
    with TestClient(restarted, follow_redirects=False) as other:
        response = other.get("/", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert response.status_code == 303


def test_rotating_the_token_file_ends_the_sessions_made_with_the_old_token(
    ward: Ward, tmp_path: Path
) -> None:
    path = write_token_file(tmp_path / "read-token", READ_TOKEN)
    app = create_app(ward.gateway, TOKEN, read_token=TokenSource(path))
    with TestClient(app, follow_redirects=False) as client:
        assert _login(client, READ_TOKEN).status_code == 303
        assert client.get("/").status_code == 200
        rotated = "rotated-read-token-0123456789-abcdefghij"
        os.replace(write_token_file(tmp_path / "new-token", rotated), path)
        assert client.get("/").status_code == 303  # the old session ended
        assert _login(client, READ_TOKEN).status_code == 401
        assert _login(client, rotated).status_code == 303
        assert client.get("/").status_code == 200


def test_logout_clears_the_cookie(client: TestClient) -> None:
    _login(client, READ_TOKEN)
    response = client.post("/logout")
    assert response.status_code == 303
    assert response.headers["location"] == "login"
    assert "Max-Age=0" in _cookie(response)
    assert client.get("/").status_code == 303


def test_login_is_refused_when_no_token_is_configured(ward: Ward) -> None:
    with TestClient(create_app(ward.gateway, None), follow_redirects=False) as client:
        response = _login(client, READ_TOKEN)
    assert response.status_code == 403
    assert "no token_file configured" in response.text
