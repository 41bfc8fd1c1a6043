"""The simulator's in-process NE-1000 line: the same bytes as the pty server, the same faults.

The driver suite (tests/drivers/test_driver_suite.py) runs on this line as on every wire; here,
what is particular to it: byte-for-byte the pty server's answers, the line's faults as the pty
server plays them, the pump's own alarm packets, and one live port at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import serial

from drivers.errors import LinkLostError, PumpProtocolError, PumpTimeoutError
from drivers.newera import NeweraDriver
from protocol.clock import ManualClock
from protocol.newera import Command, Framing, Mnemonic, encode_command
from protocol.pump_state import PumpAlarm, PumpState
from simulator.in_process import IN_PROCESS_PATH, InProcessNewera, InProcessPort
from simulator.model import PumpModel
from simulator.newera_server import NeweraSimulatorServer
from simulator.newera_session import NE_ALARM_FOR

pytestmark = pytest.mark.timeout(30)

TIMEOUT_S = 0.05


def _model(clock: ManualClock) -> PumpModel:
    return PumpModel(clock, max_rate_ml_per_h=50.0, reservoir_ml=100.0)


@pytest.fixture
def line() -> Iterator[InProcessNewera]:
    pump = InProcessNewera(_model(ManualClock()))
    try:
        yield pump
    finally:
        pump.close()


@pytest.fixture
def driver(line: InProcessNewera) -> Iterator[NeweraDriver]:
    pump = NeweraDriver(line.pump_url, link=line.open, timeout_s=TIMEOUT_S, retries=0)
    try:
        pump.open()
        yield pump
    finally:
        pump.close()


def _packet(mnemonic: Mnemonic, argument: str = "", framing: Framing = Framing.SAFE) -> bytes:
    return encode_command(Command(mnemonic, argument, 0), framing)


#: A host's session: safe mode on, then the commands a gateway sends, and a few it refuses.
_SESSION = [
    _packet(Mnemonic.VERSION, framing=Framing.BASIC),
    _packet(Mnemonic.SAFE_MODE, "20", framing=Framing.BASIC),
    _packet(Mnemonic.DIAMETER),
    _packet(Mnemonic.RATE, "12.5MH"),
    _packet(Mnemonic.VOLUME, "5.000"),
    _packet(Mnemonic.RUN),
    _packet(Mnemonic.DISPENSED),
    _packet(Mnemonic.RATE),
    _packet(Mnemonic.RATE, "99999MH"),  # out of range
    _packet(Mnemonic.VERSION, framing=Framing.BASIC),  # basic framing in safe mode: ?COM
    b"\x02\x05garbage\x03",  # a packet that does not decode
    _packet(Mnemonic.STOP),
    _packet(Mnemonic.DISPENSED),
]


def _pty_answers(packets: list[bytes]) -> list[bytes]:
    """What the pty server answers to each packet (read until the line is quiet)."""
    server = NeweraSimulatorServer(_model(ManualClock()), listen="pty")
    server.start()
    try:
        port = serial.serial_for_url(server.listening, timeout=5.0)
        try:
            answers = []
            for packet in packets:
                port.write(packet)
                answers.append(_read_until_quiet(port))
            return answers
        finally:
            port.close()
    finally:
        server.close()


def _read_until_quiet(port: serial.Serial) -> bytes:
    data = bytes(port.read(1))  # the first byte: up to the port's timeout
    port.timeout = 0.05
    while chunk := bytes(port.read(4096)):  # then until the line is quiet
        data += chunk
    port.timeout = 5.0
    return data


def test_answers_byte_for_byte_as_the_pty_server() -> None:
    line = InProcessNewera(_model(ManualClock()))
    port = line.open()
    port.timeout = 0
    answers = []
    for packet in _SESSION:
        port.write(packet)
        answers.append(port.read(4096))
    assert all(answers[:-1])  # every command answered (the last one too, checked below)
    assert answers == _pty_answers(_SESSION)


def test_its_url_names_the_pump_and_its_address() -> None:
    assert InProcessNewera(_model(ManualClock())).pump_url == "newera://" + IN_PROCESS_PATH
    other = InProcessNewera(_model(ManualClock()), address=7)
    assert other.pump_url == f"newera://{IN_PROCESS_PATH}?address=7"


def test_a_hung_line_answers_nothing_and_a_read_waits_its_timeout(
    line: InProcessNewera, driver: NeweraDriver
) -> None:
    before = line.model.snapshot()
    line.model.line.hang = True
    started = time.monotonic()
    with pytest.raises(PumpTimeoutError, match="no reply within"):
        driver.read_status()
    assert time.monotonic() - started >= TIMEOUT_S  # a read waits its timeout, as a port does
    line.model.line.hang = False
    assert driver.read_status().state is before.state


def test_a_corrupted_reply_is_a_protocol_error_and_the_next_poll_is_clean(
    line: InProcessNewera, driver: NeweraDriver
) -> None:
    line.model.line.corrupt_probability = 1.0
    with pytest.raises(PumpProtocolError):
        driver.read_status()
    line.model.line.corrupt_probability = 0.0
    assert driver.read_status().state is PumpState.STOPPED


def test_a_reply_later_than_the_timeout_is_a_timeout_and_is_not_taken_for_the_next(
    line: InProcessNewera, driver: NeweraDriver
) -> None:
    line.model.line.reply_delay_s = 0.2  # the manual clock's scale: real seconds
    with pytest.raises(PumpTimeoutError):
        driver.read_status()
    line.model.line.reply_delay_s = 0.0
    time.sleep(0.25)  # the late reply is on the line now: the next request must drain it
    status = driver.read_status()
    assert status.rate_ml_per_h == line.model.snapshot().reported_rate_setpoint_ml_per_h


def test_the_pumps_own_alarm_packet_reaches_the_driver_before_its_next_command(
    line: InProcessNewera,
) -> None:
    ports = []

    def link() -> InProcessPort:
        ports.append(line.open())
        return ports[-1]

    # Safe mode (the pump's watchdog armed): the pump sends an alarm packet on its own.
    driver = NeweraDriver(line.pump_url, link=link, timeout_s=TIMEOUT_S, safe_timeout_s=10)
    try:
        driver.open()
        line.model.inject(PumpAlarm.OCCLUSION)
        assert ports[-1].in_waiting > 0  # the alarm packet, on the quiet line
        status = driver.read_status()
        # An occlusion is the NE-1000's "stalled" alarm, which the driver reports as such.
        assert status.state is PumpState.ALARM
        assert status.alarms == {NE_ALARM_FOR[PumpAlarm.OCCLUSION].pump_alarm}
    finally:
        driver.close()


def test_one_live_port_a_reconnect_hangs_up_the_old_one(line: InProcessNewera) -> None:
    first = line.open()
    second = line.open()
    assert not first.is_open
    with pytest.raises(OSError, match="closed"):
        first.write(_packet(Mnemonic.DISPENSED))
    second.write(_packet(Mnemonic.VERSION, framing=Framing.BASIC))
    second.timeout = 0
    assert second.read(4096)


def test_a_driver_on_a_closed_line_reports_the_link_lost(
    line: InProcessNewera, driver: NeweraDriver
) -> None:
    line.close()
    with pytest.raises(LinkLostError):
        driver.read_status()
