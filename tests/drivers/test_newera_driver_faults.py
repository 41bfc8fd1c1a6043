"""NeweraDriver faults: each ends in a typed exception within the timeout, and the driver works
again once the fault clears.

Over the NE-1000 simulator (pty and TCP) for line faults, and over a scripted TCP "pump" for
replies the simulator never sends (alarm packets racing a reply, ``?COM``, undecodable text).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from drivers import open_pump
from drivers.errors import LinkLostError, PumpProtocolError, PumpTimeoutError
from drivers.newera import NeweraDriver
from protocol.newera import (
    CommandFrame,
    CommandStreamDecoder,
    Framing,
    Mnemonic,
    NeAlarm,
    NeErrorCode,
    NeStatus,
    Reply,
    encode_reply,
)
from protocol.pump_state import PumpAlarm, PumpState
from simulator.model import PumpModel
from simulator.newera_server import NeweraSimulatorServer
from tests.drivers.newera_support import TIMEOUT_S, approved

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def any_driver(any_server: NeweraSimulatorServer) -> Iterator[NeweraDriver]:
    driver = NeweraDriver(any_server.pump_url, timeout_s=TIMEOUT_S, retries=1)
    driver.open()
    yield driver
    driver.close()


# --- link and line faults -------------------------------------------------------------------


def test_a_second_driver_cannot_open_the_same_serial_pump(
    driver: NeweraDriver, server: NeweraSimulatorServer
) -> None:
    second = NeweraDriver(server.pump_url, timeout_s=TIMEOUT_S, retries=0)
    with pytest.raises(LinkLostError, match="exclusively lock"):
        second.open()
    second.close()
    assert driver.read_status().state is PumpState.STOPPED


@pytest.mark.parametrize("sim_listen", ["tcp://127.0.0.1:0"], ids=["tcp"])
def test_a_second_driver_cannot_use_the_same_tcp_pump(server: NeweraSimulatorServer) -> None:
    with open_pump(server.pump_url, timeout_s=TIMEOUT_S) as first:
        second = NeweraDriver(server.pump_url, timeout_s=TIMEOUT_S, retries=0)
        with pytest.raises(LinkLostError):
            second.open()
        second.close()
        assert first.read_status().state is PumpState.STOPPED


def _close_soon(server: NeweraSimulatorServer, delay_s: float) -> threading.Timer:
    timer = threading.Timer(delay_s, server.close)
    timer.start()
    return timer


def test_link_cut_mid_request_over_tcp_then_recovery(model: PumpModel) -> None:
    with NeweraSimulatorServer(model, listen="tcp://127.0.0.1:0") as server:
        port = int(server.listening.rsplit(":", 1)[1])
        driver = NeweraDriver(server.pump_url, timeout_s=1.0, retries=1)
        driver.open()
        model.line.hang = True  # the request waits ...
        timer = _close_soon(server, 0.2)  # ... and the link goes away under it
        started = time.monotonic()
        with pytest.raises(LinkLostError):
            driver.read_status()
        assert time.monotonic() - started < 1.0
        timer.join()
    assert not driver.connected
    model.line.hang = False
    with NeweraSimulatorServer(model, listen=f"tcp://127.0.0.1:{port}"):
        assert driver.read_status().state is PumpState.STOPPED  # reconnects by itself
        assert driver.connected
    driver.close()


def test_link_cut_mid_request_over_a_pty(model: PumpModel) -> None:
    server = NeweraSimulatorServer(model)
    server.start()
    # No retry: pty numbers are reused at once, so a reconnect to this path could reach another
    # process's simulator when test files run in parallel.
    driver = NeweraDriver(server.pump_url, timeout_s=1.0, retries=0)
    try:
        driver.open()
        model.line.hang = True
        timer = _close_soon(server, 0.2)
        started = time.monotonic()
        with pytest.raises(LinkLostError):
            driver.read_status()
        assert time.monotonic() - started < 1.0
        timer.join()
    finally:
        driver.close()
        server.close()


def test_a_hung_line_times_out_and_the_driver_recovers(
    any_driver: NeweraDriver, model: PumpModel
) -> None:
    model.line.hang = True
    started = time.monotonic()
    with pytest.raises(PumpTimeoutError, match="no reply"):
        any_driver.read_status()
    elapsed = time.monotonic() - started
    assert 2 * TIMEOUT_S * 0.9 <= elapsed < 2 * TIMEOUT_S + 0.5  # 1 try + 1 retry
    model.line.hang = False
    assert any_driver.read_status().state is PumpState.STOPPED


def test_slow_replies_time_out_and_the_driver_recovers(
    driver: NeweraDriver, model: PumpModel
) -> None:
    driver.set_rate(approved(15.0))
    model.line.reply_delay_s = 0.4  # simulated s; a manual clock waits them in real s
    # Timeouts, or a late reply taken for the next command's (it does not parse as its answer).
    with pytest.raises((PumpTimeoutError, PumpProtocolError)):
        driver.read_status()
    model.line.reply_delay_s = 0.0
    status = driver.read_status()
    assert status.rate_ml_per_h == pytest.approx(15.0)
    assert status.state is PumpState.STOPPED
    assert driver.set_rate(approved(16.0)).exact


def test_replies_slower_than_usual_but_within_the_timeout_are_fine(
    driver: NeweraDriver, model: PumpModel
) -> None:
    model.line.reply_delay_s = 0.05
    assert driver.read_status().state is PumpState.STOPPED


@pytest.mark.hazard("H-CL-03")
def test_garbage_before_every_reply_is_skipped(any_driver: NeweraDriver, model: PumpModel) -> None:
    model.line.garbage_probability = 1.0
    for rate in (5.0, 10.0, 20.0):
        assert any_driver.set_rate(approved(rate)).exact
        assert any_driver.read_status().rate_ml_per_h == pytest.approx(rate, abs=0.01)


@pytest.mark.hazard("H-CL-03")
def test_bad_crc_replies_are_protocol_errors_and_the_driver_recovers(
    server: NeweraSimulatorServer, model: PumpModel
) -> None:
    with open_pump(server.pump_url, timeout_s=TIMEOUT_S, safe_timeout_s=30) as driver:
        model.line.corrupt_probability = 1.0
        started = time.monotonic()
        with pytest.raises(PumpProtocolError):
            driver.read_status()
        assert time.monotonic() - started < 3 * TIMEOUT_S
        model.line.corrupt_probability = 0.0
        assert driver.read_status().state is PumpState.STOPPED


# --- a scripted pump: what the simulator never does ----------------------------------------


class ScriptedPump:
    """A TCP "pump" answering each command with ``answer(command_text) -> bytes``."""

    def __init__(self, answer: Callable[[str], bytes]) -> None:
        self.answer = answer
        self.received: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scripted-pump")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"newera+tcp://127.0.0.1:{self._listener.getsockname()[1]}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.05)
            decoder = CommandStreamDecoder()
            with conn:
                while not self._stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    for item in decoder.feed(data):
                        assert isinstance(item, CommandFrame)
                        assert item.framing is Framing.SAFE  # the driver always sends safe
                        self.received.append(item.command.text)
                        conn.sendall(self.answer(item.command.text))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()


def _reply(status: NeStatus = NeStatus.STOPPED, data: str = "", **kw: object) -> bytes:
    return encode_reply(Reply(0, status, data=data, **kw), Framing.SAFE)  # type: ignore[arg-type]


def _pump_answers(text: str) -> bytes:
    mnemonic = text[1:]
    return {
        "VER": _reply(data="NE1000V3.928"),
        "DIA": _reply(data="26.59"),
        "DIS": _reply(data="I1.000W0.000ML"),
        "RAT": _reply(data="10.00MH"),
    }.get(mnemonic, _reply())


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[str], bytes]], ScriptedPump]]:
    pumps: list[ScriptedPump] = []

    def make(answer: Callable[[str], bytes]) -> ScriptedPump:
        pumps.append(ScriptedPump(answer))
        return pumps[-1]

    yield make
    for pump in pumps:
        pump.close()


def test_an_unsolicited_alarm_packet_before_the_reply_is_latched(
    scripted: Callable[[Callable[[str], bytes]], ScriptedPump],
) -> None:
    def answer(text: str) -> bytes:
        stall = encode_reply(Reply(0, alarm=NeAlarm.STALLED), Framing.SAFE)
        return (stall if text == "0DIS" else b"") + _pump_answers(text)

    pump = scripted(answer)
    with open_pump(pump.url, timeout_s=TIMEOUT_S) as driver:
        status = driver.read_status()
        assert PumpAlarm.RESERVOIR_EMPTY in status.alarms
        assert status.volume_infused_ml == 1.0
        assert pump.received.count("0DIS") == 1  # the real reply came with it: no re-send


def test_an_alarm_packet_waiting_in_the_input_is_latched(
    scripted: Callable[[Callable[[str], bytes]], ScriptedPump],
) -> None:
    def answer(text: str) -> bytes:
        timeout = encode_reply(Reply(0, alarm=NeAlarm.SAFE_TIMEOUT), Framing.SAFE)
        return _pump_answers(text) + (timeout if text == "0SAF5" else b"")

    pump = scripted(answer)
    with open_pump(pump.url, timeout_s=TIMEOUT_S) as driver:
        assert isinstance(driver, NeweraDriver)
        driver._transact(Mnemonic.SAFE_MODE, "5")
        time.sleep(0.05)  # the packet sent after the reply is now in the input
        assert PumpAlarm.COMM_TIMEOUT in driver.read_status().alarms


def test_bad_packet_answers_are_retried_then_a_protocol_error(
    scripted: Callable[[Callable[[str], bytes]], ScriptedPump],
) -> None:
    def answer(text: str) -> bytes:
        if text == "0DIS":
            return _reply(error=NeErrorCode.BAD_PACKET)
        return _pump_answers(text)

    pump = scripted(answer)
    with open_pump(pump.url, timeout_s=TIMEOUT_S, retries=2) as driver:
        with pytest.raises(PumpProtocolError, match=r"\?COM"):
            driver.read_status()
        assert pump.received.count("0DIS") == 3


def test_endless_alarm_replies_end_in_a_protocol_error(
    scripted: Callable[[Callable[[str], bytes]], ScriptedPump],
) -> None:
    def answer(text: str) -> bytes:
        if text == "0DIS":
            return encode_reply(Reply(0, alarm=NeAlarm.PROGRAM_ERROR), Framing.SAFE)
        return _pump_answers(text)

    pump = scripted(answer)
    with open_pump(pump.url, timeout_s=TIMEOUT_S, retries=0) as driver:
        with pytest.raises(PumpProtocolError, match="alarm"):
            driver.read_status()
        assert PumpAlarm.PROGRAM_ERROR in driver._latched_alarms


@pytest.mark.hazard("H-CL-03")
def test_replies_from_another_address_are_ignored(
    scripted: Callable[[Callable[[str], bytes]], ScriptedPump],
) -> None:
    def answer(text: str) -> bytes:
        other = encode_reply(Reply(3, alarm=NeAlarm.RESET), Framing.SAFE)
        return other + _pump_answers(text)

    pump = scripted(answer)
    with open_pump(pump.url, timeout_s=TIMEOUT_S) as driver:
        status = driver.read_status()
        assert status.alarms == frozenset()
        assert status.rate_ml_per_h == 10.0


@pytest.mark.hazard("H-CL-03")
def test_an_undecodable_reply_is_a_protocol_error(
    scripted: Callable[[Callable[[str], bytes]], ScriptedPump],
) -> None:
    def answer(text: str) -> bytes:
        return b"\x0200Z\x03" if text == "0DIS" else _pump_answers(text)

    pump = scripted(answer)
    with (
        open_pump(pump.url, timeout_s=TIMEOUT_S, retries=0) as driver,
        pytest.raises(PumpProtocolError, match="decode"),
    ):
        driver.read_status()
