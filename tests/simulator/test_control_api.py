"""The simulator's control API (simulator/control_api.py) on a real socket, behind the gateway's
guard: every endpoint, bad input named by field and range, the token rules, loopback only.

The pumps run on a manual clock, so what the API reports is exact and no test waits for time.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api_guard import Credentials, FixedToken, RequestGuard
from gateway.cli import main
from protocol.clock import ManualClock, ScaledClock
from protocol.pump_state import PumpAlarm
from simulator.control_api import create_control_app
from simulator.control_server import ControlServer
from simulator.ward import Ward
from tests.gateway.token_files import TEST_TOKEN, write_token_file

pytestmark = pytest.mark.timeout(30)

READ_TOKEN = "read-only-token-0123456789-abcdefghijklm"
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


class Rig:
    """A ward of two NE-1000 pumps on ptys, its clock, and a client of its control API.

    One ward and server serve the whole module (starting and stopping them costs ~0.3 s); each
    test gets the pumps reset to power-on and counts time (``t0``) and events (``seq0``) from
    its own start.
    """

    def __init__(self, ward: Ward, clock: ManualClock | ScaledClock, client: httpx.Client):
        self.ward, self.clock, self.client = ward, clock, client
        self.t0 = 0.0
        self.seq0 = 0

    def fresh(self) -> Rig:
        for pump in self.ward:
            pump.model.reset_to_power_on()
        self.t0 = self.clock.monotonic() - self.model().started_monotonic_s
        self.seq0 = self.model().events()[-1].seq
        return self

    def model(self, n: int = 1) -> Any:
        return self.ward.pump(n).model

    def truth(self, n: int = 1) -> dict[str, Any]:
        response = self.client.get(f"/v1/pumps/{n}", headers=AUTH)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def post(self, path: str, body: Any = None, *, status: int = 200) -> dict[str, Any]:
        response = self.client.post(path, json=body, headers=AUTH)
        assert response.status_code == status, response.text
        return dict(response.json())


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def _rig(clock: ManualClock | ScaledClock) -> Iterator[Rig]:
    ward = Ward.open(clock, count=2, protocol="newera", listen="pty", max_rate_ml_per_h=100.0)
    stopping = threading.Event()
    app = RequestGuard(
        create_control_app(ward, stopping=stopping),
        Credentials(FixedToken(TEST_TOKEN), FixedToken(READ_TOKEN)),
    )
    try:
        with ControlServer(app, _bound(), stopping=stopping) as server:
            base = server.address.replace("tcp://", "http://")
            with httpx.Client(base_url=base, timeout=10.0) as client:
                yield Rig(ward, clock, client)
    finally:
        ward.close()


@pytest.fixture(scope="module")
def shared_rig() -> Iterator[Rig]:
    yield from _rig(ManualClock())


@pytest.fixture
def rig(shared_rig: Rig) -> Rig:
    return shared_rig.fresh()


def _problems(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    return list(response.json()["detail"])


# ---------------------------------------------------------------------- endpoints


def test_list_pumps_names_each_pump_its_address_and_control_path(rig: Rig) -> None:
    listing = rig.client.get("/v1/pumps", headers=AUTH).json()
    assert [p["pump"] for p in listing["pumps"]] == [1, 2]
    for entry, pump in zip(listing["pumps"], rig.ward, strict=True):
        assert entry["pump_url"] == pump.server.pump_url
        assert entry["listening"] == pump.server.listening
        assert entry["control_path"] == f"/v1/pumps/{pump.number}"
        assert entry["protocol"] == "newera"
    assert listing["pumps"][0]["listening"] != listing["pumps"][1]["listening"]
    assert listing["clock"] == {"time_scale": 0.0, "adjustable": False}


def test_truth_reports_volume_to_the_microlitre_and_simulated_time(rig: Rig) -> None:
    model = rig.model()
    model.set_rate(12.3456)
    model.set_watchdog(3600.0)
    model.start()
    rig.clock.advance(1800.0)
    truth = rig.truth()
    assert truth["state"] == "infusing"
    assert truth["rate_setpoint_ml_per_h"] == 12.3456
    assert truth["measured_rate_ml_per_h"] == 12.3456
    assert truth["volume_infused_ml"] == pytest.approx(6.1728)
    assert truth["volume_infused_ul"] == 6173
    assert truth["lifetime_volume_infused_ul"] == 6173
    assert truth["reservoir_remaining_ml"] == pytest.approx(1000.0 - 6.1728)
    assert truth["simulated_s"] == rig.t0 + 1800.0
    assert truth["watchdog"] == {"timeout_s": 3600.0, "requested_s": 3600.0}
    assert truth["faults"] == []
    assert truth["scheduled"] == []
    assert truth["reported"]["volume_infused_ml"] == pytest.approx(6.1728)
    assert rig.truth(2)["volume_infused_ul"] == 0  # the other pump is untouched


def test_inject_occlusion_now_then_clear_it_by_name(rig: Rig) -> None:
    model = rig.model()
    model.set_rate(10.0)
    model.start()
    done = rig.post("/v1/pumps/1/faults", {"fault": "occlusion"})
    assert done == {"pump": 1, "done": "occlusion inject", "at_s": None}
    truth = rig.truth()
    assert truth["state"] == "alarm"
    assert truth["alarms"] == ["occlusion"]
    assert truth["faults"] == [{"fault": "occlusion", "value": None}]
    response = rig.client.delete("/v1/pumps/1/faults/occlusion", headers=AUTH)
    assert response.status_code == 200
    truth = rig.truth()
    assert truth["faults"] == []
    assert truth["alarms"] == ["occlusion"]  # latched until the host clears it
    model.clear_alarms()
    assert rig.truth()["alarms"] == []


def test_inject_a_lying_fault_with_a_value(rig: Rig) -> None:
    model = rig.model()
    model.set_rate(60.0)
    model.start()
    rig.clock.advance(600.0)
    rig.post("/v1/pumps/1/faults", {"fault": "totalizer_jump", "value": -4.5})
    truth = rig.truth()
    assert truth["faults"] == [{"fault": "totalizer_jump", "value": -4.5}]
    assert truth["volume_infused_ml"] == pytest.approx(10.0)
    assert truth["reported"]["volume_infused_ml"] == pytest.approx(5.5)


def test_line_faults_show_with_their_values(rig: Rig) -> None:
    rig.post("/v1/pumps/1/faults", {"fault": "slow", "value": 2.5})
    rig.post("/v1/pumps/1/faults", {"fault": "hang"})
    rig.post("/v1/pumps/1/faults", {"fault": "garbage", "value": 0.25})
    assert rig.truth()["faults"] == [
        {"fault": "garbage", "value": 0.25},
        {"fault": "hang", "value": None},
        {"fault": "slow", "value": 2.5},
    ]
    assert rig.model().line.hang is True


def test_inject_at_a_simulated_time(rig: Rig) -> None:
    rig.clock.advance(100.0)
    at_s = rig.t0 + 250.0
    done = rig.post("/v1/pumps/1/faults", {"fault": "door_open", "at_s": at_s})
    assert done["at_s"] == at_s
    assert rig.truth()["scheduled"] == [
        {"at_s": at_s, "fault": "door_open", "action": "inject", "value": None}
    ]
    rig.clock.advance(149.0)
    assert rig.truth()["alarms"] == []
    rig.clock.advance(1.0)
    truth = rig.truth()
    assert truth["alarms"] == ["door_open"]
    assert truth["scheduled"] == []


def test_clear_all_faults_ends_every_fault_and_drops_scheduled_ones(rig: Rig) -> None:
    rig.post("/v1/pumps/1/faults", {"fault": "occlusion"})
    rig.post("/v1/pumps/1/faults", {"fault": "stop_refused"})
    rig.post("/v1/pumps/1/faults", {"fault": "corrupt", "value": 0.5})
    rig.post("/v1/pumps/1/faults", {"fault": "air_in_line", "at_s": rig.t0 + 3600})
    response = rig.client.delete("/v1/pumps/1/faults", headers=AUTH)
    assert response.json()["done"] == "all faults cleared"
    truth = rig.truth()
    assert truth["faults"] == []
    assert truth["scheduled"] == []
    assert truth["alarms"] == ["occlusion"]  # the latched alarm is the host's to clear
    rig.clock.advance(7200.0)
    assert "air_in_line" not in rig.truth()["alarms"]


def test_refill_to_a_volume_then_to_capacity(rig: Rig) -> None:
    assert rig.post("/v1/pumps/1/refill", {"volume_ml": 12.5})["done"] == "refilled to 12.5 mL"
    assert rig.truth()["reservoir_remaining_ml"] == 12.5
    rig.post("/v1/pumps/1/refill")
    assert rig.truth()["reservoir_remaining_ml"] == 1000.0


def test_refill_while_infusing_is_a_conflict(rig: Rig) -> None:
    model = rig.model()
    model.set_rate(10.0)
    model.start()
    response = rig.client.post("/v1/pumps/1/refill", json={}, headers=AUTH)
    assert response.status_code == 409
    assert "stop first" in response.json()["detail"]


def test_reset_returns_to_power_on_but_keeps_the_lifetime_total(rig: Rig) -> None:
    model = rig.model()
    lifetime_ul = rig.truth()["lifetime_volume_infused_ul"]
    model.set_rate(36.0)
    model.set_vtbi(100.0)
    model.set_watchdog(3600.0)
    model.start()
    rig.clock.advance(600.0)  # 6 mL
    rig.post("/v1/pumps/1/faults", {"fault": "frozen_totalizer"})
    rig.post("/v1/pumps/1/faults", {"fault": "occlusion"})
    rig.post("/v1/pumps/1/faults", {"fault": "slow", "value": 1.0})
    rig.post("/v1/pumps/1/faults", {"fault": "door_open", "at_s": rig.t0 + 5000})
    assert rig.post("/v1/pumps/1/reset")["done"] == "reset to power-on state"
    truth = rig.truth()
    assert truth["state"] == "stopped"
    assert truth["alarms"] == []
    assert truth["faults"] == []
    assert truth["scheduled"] == []
    assert truth["rate_setpoint_ml_per_h"] == 0.0
    assert truth["vtbi_ml"] == 0.0
    assert truth["volume_infused_ml"] == 0.0
    assert truth["watchdog"] == {"timeout_s": 0.0, "requested_s": 0.0}
    assert truth["reservoir_remaining_ml"] == 1000.0
    # The ground truth is never cleared.
    assert truth["lifetime_volume_infused_ul"] == lifetime_ul + 6000
    rig.clock.advance(3600.0)  # the watchdog waits for a first packet, as at power-up
    assert rig.truth()["alarms"] == []
    model.set_rate(6.0)  # and the pump works again
    model.start()
    rig.clock.advance(600.0)
    assert rig.truth()["lifetime_volume_infused_ul"] == lifetime_ul + 7000


def test_reset_refuses_a_body_with_keys(rig: Rig) -> None:
    problems = _problems(rig.client.post("/v1/pumps/1/reset", json={"hard": True}, headers=AUTH))
    assert problems[0]["loc"] == ["body", "hard"]


def _events(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, event, data) of each server-sent event in ``text``."""
    found = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return found


def test_events_as_server_sent_events_since_a_sequence_number(rig: Rig) -> None:
    model = rig.model()
    model.set_rate(10.0)
    model.start()
    rig.clock.advance(60.0)
    rig.post("/v1/pumps/1/faults", {"fault": "occlusion"})
    response = rig.client.get(f"/v1/pumps/1/events?follow=false&since={rig.seq0}", headers=AUTH)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert [(kind, data["state"] or data["alarm"]) for _, kind, data in events] == [
        ("state", "infusing"),
        ("fault", None),
        ("alarm", "occlusion"),
        ("state", "alarm"),
    ]
    assert [seq for seq, _, _ in events] == [data["seq"] for _, _, data in events]
    assert events[2][2]["simulated_s"] == rig.t0 + 60.0
    assert events[2][2]["pump"] == 1
    later = rig.client.get(f"/v1/pumps/1/events?follow=false&since={events[1][0]}", headers=AUTH)
    assert [kind for _, kind, _ in _events(later.text)] == ["alarm", "state"]
    resumed = rig.client.get(
        "/v1/pumps/1/events?follow=false",
        headers={**AUTH, "Last-Event-ID": str(events[2][0])},
    )
    assert [kind for _, kind, _ in _events(resumed.text)] == ["state"]


def test_event_stream_follows_new_events(rig: Rig) -> None:
    path = f"/v1/pumps/2/events?since={rig.model(2).events()[-1].seq}"
    with rig.client.stream("GET", path, headers=AUTH) as stream:
        assert stream.status_code == 200
        rig.post("/v1/pumps/2/faults", {"fault": "power_loss"})
        seen: list[str] = []
        for line in stream.iter_lines():  # ends at the test's timeout if nothing comes
            if line.startswith("event: "):
                seen.append(line.removeprefix("event: "))
            if "alarm" in seen:
                break
    assert seen[:2] == ["fault", "alarm"]


def test_clock_of_a_manual_ward_cannot_change_scale(rig: Rig) -> None:
    response = rig.client.put("/v1/clock", json={"time_scale": 10}, headers=AUTH)
    assert response.status_code == 409
    assert "manual" in response.json()["detail"]


def test_clock_time_scale_changes_at_run_time() -> None:
    for rig in _rig(ScaledClock(50.0)):
        assert rig.client.get("/v1/clock", headers=AUTH).json() == {
            "time_scale": 50.0,
            "adjustable": True,
        }
        before = rig.truth()["simulated_s"]
        response = rig.client.put("/v1/clock", json={"time_scale": 2000}, headers=AUTH)
        assert response.json() == {"time_scale": 2000.0, "adjustable": True}
        assert rig.clock.time_scale == 2000.0
        truth = rig.truth()
        assert truth["time_scale"] == 2000.0
        assert truth["simulated_s"] >= before  # no jump back


def test_scaled_clock_changes_scale_without_a_jump(monkeypatch: pytest.MonkeyPatch) -> None:
    real = {"monotonic": 100.0, "time": 1_000_000.0}
    monkeypatch.setattr("protocol.clock.time.monotonic", lambda: real["monotonic"])
    monkeypatch.setattr("protocol.clock.time.time", lambda: real["time"])
    clock = ScaledClock(10.0)
    real["monotonic"] += 5.0
    real["time"] += 5.0
    assert (clock.monotonic(), clock.wall()) == (50.0, 1_000_050.0)
    clock.set_time_scale(600.0)
    assert (clock.monotonic(), clock.wall()) == (50.0, 1_000_050.0)
    real["monotonic"] += 1.0
    real["time"] += 1.0
    assert (clock.monotonic(), clock.wall()) == (650.0, 1_000_650.0)
    assert clock.real_seconds(600.0) == 1.0
    with pytest.raises(ValueError, match="time_scale"):
        clock.set_time_scale(0.0)
    assert clock.time_scale == 600.0


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("path", "body", "loc", "words"),
    [
        ("/v1/pumps/1/faults", {"fault": "garbage", "value": 2}, "value", "0..1"),
        ("/v1/pumps/1/faults", {"fault": "slow"}, "value", "0..3600"),
        ("/v1/pumps/1/faults", {"fault": "rate_echo_wrong", "value": 1e5}, "value", "-10000"),
        ("/v1/pumps/1/faults", {"fault": "totalizer_jump", "value": "5"}, "value", "number"),
        ("/v1/pumps/1/faults", {"fault": "slow", "value": True}, "value", "number"),
        ("/v1/pumps/1/faults", {"fault": "hang", "value": 1}, "value", "takes no value"),
        ("/v1/pumps/1/faults", {"fault": "power_loss", "action": "clear"}, "action", "inject"),
        ("/v1/pumps/1/faults", {"fault": "flood"}, "fault", "occlusion"),
        ("/v1/pumps/1/faults", {"fault": "hang", "when": 3}, "when", "not permitted"),
        ("/v1/pumps/1/faults", {"fault": "hang", "at_s": -1}, "at_s", "greater than or equal"),
        ("/v1/pumps/1/faults", {"value": 1}, "fault", "required"),
        ("/v1/pumps/1/refill", {"volume_ml": 1500}, "volume_ml", "0..1000"),
        ("/v1/pumps/1/refill", {"volume_ml": -1}, "volume_ml", "0..1000"),
        ("/v1/pumps/1/refill", [1], None, "JSON object"),
    ],
)
def test_bad_bodies_are_422_naming_the_field_and_range(
    rig: Rig, path: str, body: Any, loc: str | None, words: str
) -> None:
    problems = _problems(rig.client.post(path, json=body, headers=AUTH))
    assert problems[0]["loc"] == (["body", loc] if loc else ["body"])
    assert words in problems[0]["msg"]
    assert rig.truth()["faults"] == []  # nothing changed


@pytest.mark.parametrize(
    ("scale", "words"), [(0, "greater than 0"), (200_000, "less than or equal to 100000")]
)
def test_bad_time_scale_is_422_naming_the_range(rig: Rig, scale: float, words: str) -> None:
    problems = _problems(rig.client.put("/v1/clock", json={"time_scale": scale}, headers=AUTH))
    assert problems[0]["loc"] == ["body", "time_scale"]
    assert words in problems[0]["msg"]


def test_non_finite_numbers_are_refused(rig: Rig) -> None:
    response = rig.client.post(
        "/v1/pumps/1/faults",
        content=b'{"fault": "slow", "value": NaN}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    problems = _problems(response)
    assert problems[0]["loc"] == ["body", "value"]
    assert "finite" in problems[0]["msg"]


def test_a_fault_in_the_past_names_at_s_and_what_is_allowed(rig: Rig) -> None:
    rig.clock.advance(500.0)
    body = {"fault": "hang", "at_s": rig.t0 + 10}
    problems = _problems(rig.client.post("/v1/pumps/1/faults", json=body, headers=AUTH))
    assert problems[0]["loc"] == ["body", "at_s"]
    assert f"allowed >= {rig.t0 + 500:g}" in problems[0]["msg"]


def test_unknown_pump_is_404_naming_the_range(rig: Rig) -> None:
    response = rig.client.get("/v1/pumps/3", headers=AUTH)
    assert response.status_code == 404
    assert response.json()["detail"] == "no pump 3: pumps are 1..2"
    assert _problems(rig.client.get("/v1/pumps/0", headers=AUTH))[0]["loc"] == ["path", "n"]


def test_clearing_an_inject_only_fault_names_the_path_field(rig: Rig) -> None:
    problems = _problems(rig.client.delete("/v1/pumps/1/faults/power_loss", headers=AUTH))
    assert problems[0]["loc"] == ["path", "fault"]
    assert "allows only action 'inject'" in problems[0]["msg"]
    problems = _problems(rig.client.delete("/v1/pumps/1/faults/flood", headers=AUTH))
    assert problems[0]["loc"] == ["path", "fault"]


def test_a_body_without_a_json_content_type_says_what_to_send(rig: Rig) -> None:
    response = rig.client.post(
        "/v1/pumps/1/faults",
        content=b'{"fault": "hang"}',
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "Content-Type: application/json" in _problems(response)[0]["msg"]


# ---------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/pumps"),
        ("GET", "/v1/pumps/1"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/pumps/1/faults"),
        ("DELETE", "/v1/pumps/1/faults"),
        ("POST", "/v1/pumps/1/reset"),
        ("PUT", "/v1/clock"),
        ("GET", "/v1/pumps/1/events"),
    ],
)
def test_no_token_is_401_and_a_wrong_one_too(rig: Rig, method: str, path: str) -> None:
    bad = {"Authorization": "Bearer " + "x" * 40}
    for headers in ({}, bad):
        # No body: the guard refuses before reading one (and closes the connection).
        response = rig.client.request(method, path, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert rig.truth()["faults"] == []


def test_the_read_token_reads_but_a_write_with_it_is_403(rig: Rig) -> None:
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert rig.client.get("/v1/pumps/1", headers=read).status_code == 200
    response = rig.client.post("/v1/pumps/1/faults", json={"fault": "hang"}, headers=read)
    assert response.status_code == 403
    assert "only read" in response.json()["detail"]
    assert rig.truth()["faults"] == []


def test_openapi_schema_behind_the_token_lists_every_endpoint(rig: Rig) -> None:
    schema = rig.client.get("/openapi.json", headers=AUTH).json()
    assert set(schema["paths"]) == {
        "/v1/pumps",
        "/v1/pumps/{n}",
        "/v1/pumps/{n}/faults",
        "/v1/pumps/{n}/faults/{fault}",
        "/v1/pumps/{n}/refill",
        "/v1/pumps/{n}/reset",
        "/v1/pumps/{n}/events",
        "/v1/clock",
    }
    fault_request = schema["components"]["schemas"]["FaultRequest"]
    assert fault_request["additionalProperties"] is False
    assert rig.client.get("/docs", headers=AUTH).status_code == 404


# ---------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--control", "tcp://0.0.0.0:0"], "--control '0.0.0.0:0': not a loopback address"),
        (["--control", "http://127.0.0.1:0"], "--control"),
        (["--control", "tcp://127.0.0.1:99999"], "--control"),
    ],
)
def test_cli_refuses_a_bad_control_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    token = write_token_file(tmp_path / "token")
    code = main(
        ["sim", "--listen", "tcp://127.0.0.1:0", "--control-token-file", str(token), *extra]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--control", "tcp://127.0.0.1:0"], "--control needs --control-token-file"),
        (["--control-token-file", "x"], "--control-token-file"),
        (["--pumps", "0"], "--pumps"),
        (["--pumps", "65"], "from 1 to 64"),
        (["--listen", "tcp://127.0.0.1:65535", "--pumps", "2"], "up to 65534"),
        (["--time-scale", "100001"], "at most 100000"),
    ],
)
def test_cli_refuses_bad_control_and_pump_options(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    assert main(["sim", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err


def test_cli_refuses_an_open_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = write_token_file(tmp_path / "token")
    token.chmod(0o644)
    code = main(["sim", "--control", "tcp://127.0.0.1:0", "--control-token-file", str(token)])
    assert code == 2
    assert "chmod 600" in capsys.readouterr().err


def test_model_alarm_names_match_fault_kinds() -> None:
    """The truth lists conditions as fault kinds: each condition alarm is also a fault kind."""
    from simulator.faults import FaultKind
    from simulator.model import CONDITION_ALARMS

    assert {a.value for a in CONDITION_ALARMS} <= {k.value for k in FaultKind}
    assert PumpAlarm.OCCLUSION.value == FaultKind.OCCLUSION.value
