"""Sixteen pumps in one simulator process (simulator/ward.py), no cross-talk: a fault injected
on one through the control API shows on that one only, over the API and over its wire; a rate set
on each pump over its own wire is that pump's own."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import drivers
from gateway.api_guard import Credentials, FixedToken, RequestGuard
from gateway.safety import check_rate
from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm, PumpState
from simulator.control_api import create_control_app
from simulator.control_server import ControlServer
from simulator.errors import OutOfRangeError
from simulator.ward import Ward, listen_addresses
from tests.gateway.token_files import TEST_TOKEN

pytestmark = pytest.mark.timeout(60)

PUMPS = 16
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


@pytest.fixture(params=["newera", "modbus"])
def ward(request: pytest.FixtureRequest) -> Iterator[Ward]:
    ward = Ward.open(ManualClock(), count=PUMPS, protocol=request.param, listen="tcp://127.0.0.1:0")
    try:
        yield ward
    finally:
        ward.close()


@pytest.fixture
def control(ward: Ward) -> Iterator[httpx.Client]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stopping = threading.Event()
    app = RequestGuard(
        create_control_app(ward, stopping=stopping), Credentials(FixedToken(TEST_TOKEN))
    )
    with ControlServer(app, sock, stopping=stopping) as server:
        base = server.address.replace("tcp://", "http://")
        with httpx.Client(base_url=base, timeout=10.0, headers=AUTH) as client:
            yield client


def test_sixteen_pumps_no_cross_talk(ward: Ward, control: httpx.Client) -> None:
    pumps = control.get("/v1/pumps").json()["pumps"]
    assert [p["pump"] for p in pumps] == list(range(1, PUMPS + 1))
    assert len({p["listening"] for p in pumps}) == PUMPS  # a port each
    rates = {n: n * 1.25 for n in range(1, PUMPS + 1)}  # each below the 70-kg ceiling, 28 mL/h
    links = [drivers.open_pump(p["pump_url"]) for p in pumps]
    try:
        for n, link in enumerate(links, start=1):
            readback = link.set_rate(check_rate(rates[n], weight_kg=70.0))
            assert readback.readback_ml_per_h == pytest.approx(rates[n], abs=0.01)
        for link in links:
            link.start()
        response = control.post("/v1/pumps/7/faults", json={"fault": "occlusion"})
        assert response.status_code == 200
        for n, link in enumerate(links, start=1):
            status = link.read_status()
            assert status.rate_ml_per_h == pytest.approx(rates[n], abs=0.01)
            truth = control.get(f"/v1/pumps/{n}").json()
            assert truth["rate_setpoint_ml_per_h"] == pytest.approx(rates[n], abs=0.01)
            if n == 7:  # (an NE-1000 reports any stopping condition as a stall)
                assert status.alarms
                assert status.state is PumpState.ALARM
                assert truth["faults"] == [{"fault": "occlusion", "value": None}]
            else:
                assert status.alarms == frozenset()
                assert status.state is PumpState.INFUSING
                assert truth["faults"] == []
                assert truth["state"] == "infusing"
    finally:
        with ThreadPoolExecutor(PUMPS) as pool:  # an NE-1000 link takes 0.3 s to close
            list(pool.map(lambda link: link.close(), links))
    assert ward.pump(7).model.snapshot().alarms == {PumpAlarm.OCCLUSION}
    assert all(not p.model.snapshot().alarms for p in ward if p.number != 7)


def test_consecutive_ports_from_a_fixed_first_port() -> None:
    assert listen_addresses("tcp://127.0.0.1:5000", 3) == [
        "tcp://127.0.0.1:5000",
        "tcp://127.0.0.1:5001",
        "tcp://127.0.0.1:5002",
    ]
    assert listen_addresses("tcp://[::1]:0", 2) == ["tcp://[::1]:0", "tcp://[::1]:0"]
    assert listen_addresses("pty", 2) == ["pty", "pty"]
    with pytest.raises(OutOfRangeError, match="up to 65534"):
        listen_addresses("tcp://127.0.0.1:65535", 2)
