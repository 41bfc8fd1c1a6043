"""The unmodified nesp-lib 2.0.0 client drives the NE-1000 simulator over a real pty.

nesp-lib opens ``serial.Serial(port=path)`` with no read timeout: a simulator that stays silent
would block it for ever.  So every nesp-lib call runs in a worker thread joined with a timeout
(:func:`bounded`); a hang fails the test, and closing the port and the server at teardown makes
the blocked read fail so the worker ends.  The pump, its server and the :class:`ManualClock` the
tests advance are the pytest plugin's ``sim_pump``, ``sim_server`` and ``sim_clock``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import nesp_lib
import pytest

from protocol.clock import ManualClock
from protocol.newera import Framing, NeAlarm, decode_replies
from protocol.newera.framing import ReplyFrame
from protocol.pump_state import PumpAlarm, PumpState
from simulator.model import EventKind, PumpModel
from simulator.newera_server import NeweraSimulatorServer
from simulator.server import SimulatorServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(30)]

T = TypeVar("T")

#: Real seconds one nesp-lib call may take before the test calls it a hang.
CALL_TIMEOUT_S = 5.0


class NespHangError(AssertionError):
    """nesp-lib did not return: the simulator left it waiting for bytes."""


def bounded(call: Callable[[], T], timeout_s: float = CALL_TIMEOUT_S) -> T:
    """Run a nesp-lib call in a worker thread; fail (not block) if it does not return."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="nesp-lib-call", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise NespHangError(f"nesp-lib call did not return within {timeout_s} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def wait_until(condition: Callable[[], bool], timeout_s: float = CALL_TIMEOUT_S) -> None:
    """Poll ``condition`` (real time: for the server thread's I/O, not simulated effects)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


class RecordingPort(nesp_lib.Port):
    """nesp-lib's own port, also keeping every byte it receives (nesp-lib itself unchanged)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, 19200)
        self.received = bytearray()

    def _receive(self, data_length: int) -> bytes:
        data: bytes = super()._receive(data_length)
        self.received += data
        return data

    def cancel(self) -> None:
        """Make a read blocked in another thread return (pyserial's abort pipe)."""
        serial_port = self._Port__serial  # type: ignore[attr-defined]
        serial_port.cancel_read()

    def replies(self) -> list[ReplyFrame]:
        _, items = decode_replies(bytes(self.received))
        return [item for item in items if isinstance(item, ReplyFrame)]


def stop_heartbeat_without_a_word(pump: nesp_lib.Pump) -> None:
    """End nesp-lib's safe-mode heartbeat thread *without* sending anything, as if the host
    program died: nesp-lib only stops it by sending ``SAF0``, which would disarm the pump."""
    thread = pump._Pump__heartbeat_thread
    if thread is None:
        return
    pump._Pump__heartbeat_event_timeout_s = 0.0
    pump._Pump__heartbeat_event.set()
    thread.join(CALL_TIMEOUT_S)
    assert not thread.is_alive()
    pump._Pump__heartbeat_thread = None
    pump._Pump__heartbeat_event = None


@pytest.fixture
def ports(sim_server: SimulatorServer) -> Iterator[Callable[[], RecordingPort]]:
    """Opens nesp-lib ports on the simulator; closes them (and stops heartbeats) at the end."""
    opened: list[RecordingPort] = []
    pumps: list[nesp_lib.Pump] = []

    def open_port() -> RecordingPort:
        port = bounded(lambda: RecordingPort(sim_server.listening))
        opened.append(port)
        return port

    open_port.pumps = pumps  # type: ignore[attr-defined]
    yield open_port
    for port in opened:
        port.cancel()  # a nesp-lib call left hanging on a silent line returns now
    for pump in pumps:
        stop_heartbeat_without_a_word(pump)
    for port in opened:
        port.close()


def make_pump(
    ports: Callable[[], RecordingPort], safe_mode_timeout_s: int = 0
) -> tuple[nesp_lib.Pump, RecordingPort]:
    port = ports()
    pump = bounded(lambda: nesp_lib.Pump(port, safe_mode_timeout_s=safe_mode_timeout_s))
    ports.pumps.append(pump)  # type: ignore[attr-defined]
    return pump, port


def infuse_28_ml_per_h(pump: nesp_lib.Pump) -> None:
    """The observed client exchange of docs/newera.md §9: identify, DIA, DIR, RAT, RUN."""
    assert bounded(lambda: pump.model_number) == 1000
    assert bounded(lambda: pump.firmware_version) == (3, 928)

    def program() -> None:
        pump.syringe_diameter_mm = 26.59
        pump.pumping_direction = nesp_lib.PumpingDirection.INFUSE
        pump.pumping_rate_ml_per_min = 28 / 60
        pump.run(wait_while_running=False)

    bounded(program)


def test_nesp_lib_basic_mode_session(
    ports: Callable[[], RecordingPort], sim_pump: PumpModel, sim_clock: ManualClock
) -> None:
    pump, port = make_pump(ports)
    infuse_28_ml_per_h(pump)
    assert bounded(lambda: pump.syringe_diameter_mm) == pytest.approx(26.59)
    assert bounded(lambda: pump.pumping_direction) is nesp_lib.PumpingDirection.INFUSE
    assert bounded(lambda: pump.pumping_rate_ml_per_min) == pytest.approx(0.4666)
    assert bounded(lambda: pump.status) is nesp_lib.Status.INFUSING
    assert sim_pump.snapshot().rate_setpoint_ml_per_h == pytest.approx(27.996)
    sim_clock.advance(3600)
    assert bounded(lambda: pump.volume_infused_ml) == pytest.approx(27.99)  # shown truncated
    assert bounded(lambda: pump.volume_withdrawn_ml) == 0.0
    bounded(pump.stop)  # STP pauses; nesp-lib waits while "running": paused is not
    assert sim_pump.snapshot().state is PumpState.PAUSED
    bounded(pump.stop)
    assert sim_pump.snapshot().state is PumpState.STOPPED
    bounded(pump.volume_infused_clear)
    assert bounded(lambda: pump.volume_infused_ml) == 0.0
    assert all(frame.framing is Framing.BASIC for frame in port.replies())


def test_nesp_lib_safe_mode_session(
    ports: Callable[[], RecordingPort], sim_pump: PumpModel, sim_clock: ManualClock
) -> None:
    pump, port = make_pump(ports, safe_mode_timeout_s=5)
    assert sim_pump.snapshot().watchdog_timeout_s == 5.0
    infuse_28_ml_per_h(pump)
    assert bounded(lambda: pump.safe_mode_timeout_s) == 5
    assert bounded(lambda: pump.status) is nesp_lib.Status.INFUSING
    sim_clock.advance(3)  # within the timeout of the last packet
    assert bounded(lambda: pump.volume_infused_ml) == pytest.approx(0.023, abs=0.001)
    sim_clock.advance(3)
    assert bounded(lambda: pump.status) is nesp_lib.Status.INFUSING  # fed in time
    bounded(lambda: pump.stop(wait_while_running=False))
    bounded(lambda: pump.stop(wait_while_running=False))
    assert sim_pump.snapshot().state is PumpState.STOPPED
    frames = port.replies()
    assert frames
    assert all(frame.framing is Framing.SAFE for frame in frames)
    # Back to basic mode: nesp-lib stops its heartbeat thread.
    bounded(lambda: setattr(pump, "safe_mode_timeout_s", 0))
    assert sim_pump.snapshot().watchdog_timeout_s == 0.0
    assert bounded(lambda: pump.status) is nesp_lib.Status.STOPPED
    assert PumpAlarm.COMM_TIMEOUT not in sim_pump.snapshot().alarms


def test_safe_mode_timeout_with_the_client_gone_stops_the_pump_and_reports_a_t(
    ports: Callable[[], RecordingPort],
    sim_pump: PumpModel,
    sim_clock: ManualClock,
    sim_server: NeweraSimulatorServer,
) -> None:
    pump, port = make_pump(ports, safe_mode_timeout_s=5)
    infuse_28_ml_per_h(pump)
    assert sim_pump.snapshot().state is PumpState.INFUSING
    # The host program dies: no more packets, no SAF0.
    stop_heartbeat_without_a_word(pump)
    port.close()
    sim_clock.advance(4.9)
    assert sim_pump.snapshot().state is PumpState.INFUSING
    sim_clock.advance(0.2)
    snapshot = sim_pump.snapshot()
    assert snapshot.state is PumpState.ALARM
    assert PumpAlarm.COMM_TIMEOUT in snapshot.alarms
    assert snapshot.volume_infused_ml == pytest.approx(27.996 * 5 / 3600)  # stopped at 5 s
    timeouts = [e for e in sim_pump.events() if e.alarm is PumpAlarm.COMM_TIMEOUT]
    assert [e.kind for e in timeouts] == [EventKind.ALARM]
    # In safe mode the pump sends an alarm packet on its own; nobody hears it.
    wait_until(lambda: sim_server.alarm_packets_sent == 1)
    # The next client: its first reply is A?T (nesp-lib ignores an alarm on its first command
    # and sends it again), then the pump is stopped and stays stopped.
    pump2, port2 = make_pump(ports)
    first = port2.replies()[0]
    assert first.reply.alarm is NeAlarm.SAFE_TIMEOUT
    assert first.framing is Framing.BASIC  # its SAF0 was carried out: basic mode
    assert bounded(lambda: pump2.status) is nesp_lib.Status.STOPPED
    sim_clock.advance(3600)
    assert bounded(lambda: pump2.status) is nesp_lib.Status.STOPPED
    assert sim_pump.snapshot().volume_infused_ml == snapshot.volume_infused_ml


def test_a_power_loss_shows_as_a_reset_alarm_to_nesp_lib(
    ports: Callable[[], RecordingPort], sim_pump: PumpModel
) -> None:
    sim_pump.power_loss()  # as after power-up: the first reply is A?R, which nesp-lib ignores
    pump, port = make_pump(ports)
    assert bytes(port.received).startswith(b"\x0200A?R\x03\x0200S\x03")
    sim_pump.power_loss()  # on any later command nesp-lib raises it
    with pytest.raises(nesp_lib.StatusAlarmException) as raised:
        bounded(lambda: pump.status)
    assert raised.value.alarm_status is nesp_lib.AlarmStatus.RESET
    assert bounded(lambda: pump.status) is nesp_lib.Status.STOPPED


def test_nesp_lib_sees_refusals_as_its_own_exceptions(
    ports: Callable[[], RecordingPort], sim_pump: PumpModel
) -> None:
    pump, _ = make_pump(ports)
    with pytest.raises(ValueError, match="Pumping rate invalid"):  # ?OOR: above the maximum
        bounded(lambda: setattr(pump, "pumping_rate_ml_per_min", 9.0))  # 540 mL/h
    with pytest.raises(nesp_lib.StateException):  # ?NA: this pump only infuses
        bounded(lambda: setattr(pump, "pumping_direction", nesp_lib.PumpingDirection.WITHDRAW))
    bounded(lambda: setattr(pump, "pumping_volume_ml", 2.5))
    assert sim_pump.snapshot().vtbi_ml == 2.5
    assert bounded(lambda: pump.pumping_volume_ml) == pytest.approx(2.5)
    assert sim_pump.snapshot().state is PumpState.STOPPED


def test_a_hung_simulator_fails_the_call_instead_of_blocking(
    ports: Callable[[], RecordingPort], sim_pump: PumpModel
) -> None:
    pump, _ = make_pump(ports)
    sim_pump.line.hang = True
    with pytest.raises(NespHangError):
        bounded(lambda: pump.status, timeout_s=0.3)
    # Teardown closes the port: the worker's blocked read fails and the thread ends.
