"""A whole course driven by ``infusion-gateway run`` against ``infusion-gateway sim``, while a
test rig that knows nothing of this project (plain httpx) reaches into the simulated pump through
the control API: it injects an occlusion and a link drop, acknowledges the gateway's alarms, reads
the pump's truth (nothing delivered beyond the prescription), resets the pump and starts again.

Real processes on real (scaled) time: the rig polls with deadlines.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.gateway.test_e2e_processes import (
    _an_hour_ago,
    _days,
    _first_json_line,
    _spawn,
    _stop,
    _wait_for,
)
from tests.gateway.token_files import TEST_TOKEN, write_token_file

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

#: A 24-h day in 36 real seconds, the 3-day course in about 110 s (the gateway allows 2550 at most).
TIME_SCALE = 2400.0
OPERATOR = {"operator": "test rig", "note": "checked the pump"}


class Rig:
    """The rig's two plain HTTP clients: the simulator's control API and the gateway's API."""

    def __init__(self, control: httpx.Client, gateway: httpx.Client | None = None) -> None:
        self.control = control
        self.gateway = gateway

    def truth(self) -> dict[str, Any]:
        response = self.control.get("/v1/pumps/1")
        response.raise_for_status()
        return dict(response.json())

    def channel(self) -> dict[str, Any]:
        assert self.gateway is not None
        response = self.gateway.get("/v1/channels/bed1")
        response.raise_for_status()
        return dict(response.json())

    def until(self, condition: Callable[[], bool], what: str, deadline_s: float = 60) -> None:
        _wait_for(condition, deadline_s, what)

    def acknowledge_until_infusing(self) -> None:
        """As a nurse would: acknowledge the gateway's alarm until the pump runs again."""

        def infusing() -> bool:
            if self.channel()["state"] == "alarm":
                assert self.gateway is not None
                assert self.gateway.post("/v1/channels/bed1/ack", json=OPERATOR).is_success
            return bool(self.truth()["state"] == "infusing")

        self.until(infusing, "the pump infusing again after the acknowledgement")

    def completed_acknowledging_alarms(self) -> bool:
        """Whether the course has completed; an alarm on the way is acknowledged."""
        state = self.channel()["state"]
        if state == "alarm":
            assert self.gateway is not None
            assert self.gateway.post("/v1/channels/bed1/ack", json=OPERATOR).is_success
        return bool(state == "completed")


def _client(address: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url="http://" + address.removeprefix("tcp://"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    )


def _gateway(pump_url: str, state_dir: Path, token: Path, log: IO[str]) -> subprocess.Popen[str]:
    return _spawn(
        "run",
        "--pump",
        pump_url,
        "--arm",
        "flat",
        "--weight-kg",
        "70",
        "--randomised-at",
        _an_hour_ago(),
        "--state-dir",
        str(state_dir),
        "--api",
        "127.0.0.1:0",
        "--token-file",
        str(token),
        "--time-scale",
        str(TIME_SCALE),
        stderr=log,
    )


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    token = write_token_file(tmp_path / "control-token")
    sim = _spawn(
        "sim",
        "--protocol",
        "modbus",
        "--listen",
        "tcp://127.0.0.1:0",
        "--time-scale",
        str(TIME_SCALE),
        "--max-rate-ml-per-h",
        "100",
        "--reservoir-ml",
        "2000",
        "--control",
        "tcp://127.0.0.1:0",
        "--control-token-file",
        str(token),
    )
    try:
        yield sim, _first_json_line(sim)
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.communicate(timeout=10)


def test_a_course_with_an_occlusion_and_a_link_drop_then_reset_and_again(
    simulator: tuple[subprocess.Popen[str], dict[str, Any]], tmp_path: Path
) -> None:
    sim, info = simulator
    assert info["control"].startswith("tcp://127.0.0.1:")
    token = write_token_file(tmp_path / "gateway-token")
    state_dir = tmp_path / "state"
    log = (tmp_path / "gateway.log").open("w")
    with log, _client(info["control"], TEST_TOKEN) as control:
        rig = Rig(control)
        gateway = _gateway(info["pump_url"], state_dir, token, log)
        try:
            with _client(_first_json_line(gateway)["api"], TEST_TOKEN) as api:
                rig.gateway = api
                rig.until(lambda: rig.truth()["volume_infused_ml"] > 5.0, "5 mL infused")

                # An occlusion: the pump stops and alarms; the gateway sees it.
                assert control.post("/v1/pumps/1/faults", json={"fault": "occlusion"}).is_success
                assert rig.truth()["state"] == "alarm"
                rig.until(lambda: rig.channel()["state"] == "alarm", "the gateway's alarm")
                assert control.delete("/v1/pumps/1/faults/occlusion").is_success
                rig.acknowledge_until_infusing()

                # A link drop longer than the pump's watchdog: the pump stops itself.
                assert control.post("/v1/pumps/1/faults", json={"fault": "hang"}).is_success
                rig.until(
                    lambda: "comm_timeout" in rig.truth()["alarms"],
                    "the pump's watchdog stopping it",
                )
                assert rig.truth()["state"] == "alarm"
                assert control.delete("/v1/pumps/1/faults/hang").is_success
                rig.acknowledge_until_infusing()

                # As at the bedside, any later alarm is acknowledged too: at 2400x the pump's
                # 255-s watchdog is 106 real ms, which a loaded CI machine can outlast.
                rig.until(rig.completed_acknowledging_alarms, "the course completed", 300)
        finally:
            _stop(gateway)
        assert gateway.returncode == 0
        days = _days(state_dir)
        prescribed_ml = sum(day[1] for day in days)
        assert [day[0] for day in days] == [1, 2, 3]
        truth = rig.truth()
        assert truth["state"] != "infusing"
        # The truth: never more than prescribed, and the journal accounts what was delivered.
        assert truth["lifetime_volume_infused_ml"] <= prescribed_ml
        assert truth["lifetime_volume_infused_ml"] == pytest.approx(
            sum(day[2] for day in days), abs=1.0
        )
        lifetime_ml = truth["lifetime_volume_infused_ml"]

        # Reset the pump to power-on, and start a new course on it.
        assert control.post("/v1/pumps/1/reset").is_success
        truth = rig.truth()
        assert truth["volume_infused_ml"] == 0.0
        assert truth["alarms"] == []
        assert truth["lifetime_volume_infused_ml"] == lifetime_ml
        again = _gateway(info["pump_url"], tmp_path / "again", token, log)
        try:
            _first_json_line(again)
            rig.until(lambda: rig.truth()["volume_infused_ml"] > 5.0, "infusing again")
        finally:
            _stop(again)
        assert again.returncode == 0
    final = _stop(sim).strip().splitlines()[-1]
    assert '"lifetime_volume_infused_ml"' in final
    assert sim.returncode == 0
