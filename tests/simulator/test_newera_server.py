"""The NE-1000 simulator over a real pty and over TCP, driven by a raw pyserial client.

Simulated time is a :class:`ManualClock` the tests advance; real time is only spent on I/O
(short read timeouts) and on the real-time rules (the 0.5 s gap, reply delays).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import serial

from protocol.clock import ManualClock, ScaledClock
from protocol.newera import (
    Command,
    FrameError,
    Framing,
    Mnemonic,
    NeAlarm,
    NeErrorCode,
    NeStatus,
    Reply,
    ReplyFrame,
    ReplyItem,
    ReplyStreamDecoder,
    encode_command,
    encode_safe_packet,
)
from protocol.pump_state import PumpAlarm, PumpState
from simulator.model import PumpModel
from simulator.newera_server import NeweraSimulatorServer

pytestmark = pytest.mark.timeout(20)

#: Real seconds a raw client waits for a reply that should come.
REPLY_WAIT_S = 2.0
#: Real seconds a raw client listens to be sure nothing comes.
SILENCE_S = 0.25


class RawClient:
    """A bare serial client of the simulator: sends command text, decodes what comes back."""

    def __init__(self, server: NeweraSimulatorServer) -> None:
        listening = server.listening
        if listening.startswith("tcp://"):
            # A plain socket: pyserial's socket:// handler sleeps 0.3 s in close().
            host, port = listening.removeprefix("tcp://").rsplit(":", 1)
            self.port: Any = _SocketPort(socket.create_connection((host, int(port)), timeout=1))
        else:
            self.port = serial.serial_for_url(listening, timeout=0.02)
        self.decoder = ReplyStreamDecoder()
        self.raw = bytearray()

    def close(self) -> None:
        self.port.close()

    def send(self, text: str, framing: Framing = Framing.BASIC) -> None:
        """Send command text as it is (unknown commands too) in ``framing``."""
        data = text.encode("ascii")
        self.send_raw(encode_safe_packet(data) if framing is Framing.SAFE else data + b"\r")

    def send_raw(self, data: bytes) -> None:
        self.port.write(data)

    def read_some(self) -> bytes:
        """What has arrived, waiting at most 20 ms for the first byte."""
        first = bytes(self.port.read(1))
        waiting = int(self.port.in_waiting) if first else 0
        return first + (bytes(self.port.read(waiting)) if waiting else b"")

    def items(self, wait_s: float = REPLY_WAIT_S, *, count: int = 1) -> list[ReplyItem]:
        """Decoded items until ``count`` arrived or ``wait_s`` passed."""
        items: list[ReplyItem] = []
        deadline = time.monotonic() + wait_s
        while len(items) < count and time.monotonic() < deadline:
            chunk = self.read_some()
            self.raw += chunk
            items += self.decoder.feed(chunk)
        return items

    def reply(self, wait_s: float = REPLY_WAIT_S) -> ReplyFrame:
        items = self.items(wait_s)
        assert items, "no reply"
        assert isinstance(items[0], ReplyFrame), items[0]
        return items[0]

    def ask(self, text: str, framing: Framing = Framing.BASIC) -> Reply:
        self.send(text, framing)
        return self.reply().reply

    def ask_frame(self, text: str, framing: Framing = Framing.BASIC) -> ReplyFrame:
        self.send(text, framing)
        return self.reply()

    def silent(self, wait_s: float = SILENCE_S) -> bool:
        """True when nothing at all arrives for ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            chunk = self.read_some()
            if chunk:
                self.raw += chunk
                return False
        return True


class _SocketPort:
    """The part of a pyserial port :class:`RawClient` uses, on a plain socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.settimeout(0.02)

    @property
    def in_waiting(self) -> int:
        return 0  # read() returns what has arrived anyway

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def read(self, size: int) -> bytes:
        try:
            data = self._sock.recv(max(size, 4096))
        except TimeoutError:
            return b""
        if not data:
            raise serial.SerialException("socket disconnected")
        return data

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def model(clock: ManualClock) -> PumpModel:
    return PumpModel(clock, max_rate_ml_per_h=100.0)


@pytest.fixture(params=["pty", "tcp"])
def listen(request: pytest.FixtureRequest) -> str:
    return "pty" if request.param == "pty" else "tcp://127.0.0.1:0"


@pytest.fixture
def server(model: PumpModel, listen: str) -> Iterator[NeweraSimulatorServer]:
    with NeweraSimulatorServer(model, listen=listen) as server:
        yield server


@pytest.fixture
def client(server: NeweraSimulatorServer) -> Iterator[RawClient]:
    client = RawClient(server)
    yield client
    client.close()


def ok(reply: Reply, status: NeStatus = NeStatus.STOPPED, data: str = "") -> None:
    assert (reply.address, reply.status, reply.alarm, reply.error, reply.data) == (
        0,
        status,
        None,
        None,
        data,
    )


def error(reply: Reply, code: NeErrorCode) -> None:
    assert reply.alarm is None
    assert reply.error is code, reply


# --- lifecycle ------------------------------------------------------------------------------


def test_pty_server_names_its_slave_path_and_pump_url(model: PumpModel) -> None:
    with NeweraSimulatorServer(model) as server:
        assert server.listening.startswith("/dev/")
        assert server.pump_url == "newera://" + server.listening
        assert server.pump_url.startswith("newera:///dev/")


def test_tcp_server_reports_the_port_it_got(model: PumpModel) -> None:
    with NeweraSimulatorServer(model, listen="tcp://127.0.0.1:0") as server:
        host_port = server.listening.removeprefix("tcp://")
        host, port = host_port.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) > 0
        assert server.pump_url == f"newera+tcp://127.0.0.1:{port}"


def test_a_non_zero_address_goes_into_the_pump_url(model: PumpModel) -> None:
    with NeweraSimulatorServer(model, address=7) as server:
        assert server.pump_url.endswith("?address=7")


def test_close_is_idempotent_joins_its_thread_and_refuses_a_restart(model: PumpModel) -> None:
    server = NeweraSimulatorServer(model, listen="tcp://127.0.0.1:0")
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.listening
    server.start()
    names = {t.name for t in threading.enumerate()}
    assert "newera-sim-tcp" in names
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    server.close()
    server.close()
    assert "newera-sim-tcp" not in {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="closed"):
        server.start()


def test_close_before_start_is_fine(model: PumpModel) -> None:
    NeweraSimulatorServer(model).close()


@pytest.mark.parametrize("listen", ["", "udp://127.0.0.1:1", "tcp://127.0.0.1", "serial"])
def test_a_bad_listen_argument_is_refused(model: PumpModel, listen: str) -> None:
    with pytest.raises(ValueError, match="pty"):
        NeweraSimulatorServer(model, listen=listen)


def test_a_bad_address_is_refused(model: PumpModel) -> None:
    with pytest.raises(ValueError, match="address"):
        NeweraSimulatorServer(model, address=100)


# --- commands over the wire (pty and TCP) ---------------------------------------------------


def test_version_and_status(client: RawClient) -> None:
    ok(client.ask("0VER"), data="NE1000V3.928")
    ok(client.ask("0"))
    ok(client.ask("VER"), data="NE1000V3.928")  # no address: 0


def test_both_framings_are_accepted_in_basic_mode_and_answered_in_basic(
    client: RawClient,
) -> None:
    frame = client.ask_frame("0DIA", Framing.SAFE)
    assert frame.framing is Framing.BASIC
    ok(frame.reply, data="26.59")
    assert client.ask_frame("0DIA").framing is Framing.BASIC


def test_rate_is_set_in_ml_per_h_and_read_back_in_the_unit_last_set(
    client: RawClient, model: PumpModel
) -> None:
    ok(client.ask("0RAT466.6UM"))
    assert model.snapshot().rate_setpoint_ml_per_h == pytest.approx(27.996)
    ok(client.ask("0RAT"), data="466.6UM")
    ok(client.ask("0RAT12.5"))  # no unit: the unit last set (µL/min)
    assert model.snapshot().rate_setpoint_ml_per_h == pytest.approx(0.75)
    ok(client.ask("0RAT"), data="12.50UM")
    ok(client.ask("0RAT1.5MH"))
    ok(client.ask("0RAT"), data="1.500MH")


def test_a_rate_above_the_pump_maximum_is_out_of_range(client: RawClient, model: PumpModel) -> None:
    ok(client.ask("0RAT50MH"))
    error(client.ask("0RAT100.1MH"), NeErrorCode.OUT_OF_RANGE)
    error(client.ask("0RAT0MH"), NeErrorCode.OUT_OF_RANGE)
    assert model.snapshot().rate_setpoint_ml_per_h == 50.0
    ok(client.ask("0RAT"), data="50.00MH")


def test_volume_units_follow_the_diameter(client: RawClient, model: PumpModel) -> None:
    ok(client.ask("0VOL"), data="0.000ML")  # 26.59 mm at power-up: mL
    ok(client.ask("0VOL2.5"))
    assert model.snapshot().vtbi_ml == 2.5
    ok(client.ask("0DIA14.00"))
    ok(client.ask("0VOL"), data="2500.UL")
    ok(client.ask("0VOL250"))
    assert model.snapshot().vtbi_ml == pytest.approx(0.25)
    ok(client.ask("0DIS"), data="I0.000W0.000UL")
    ok(client.ask("0VOL0"))  # continuous
    assert model.snapshot().vtbi_ml == 0.0
    error(client.ask("0DIA80.1"), NeErrorCode.OUT_OF_RANGE)
    ok(client.ask("0VOLML"))  # units set explicitly, as nesp-lib does
    ok(client.ask("0VOL1.5"))
    assert model.snapshot().vtbi_ml == 1.5


def test_run_pause_stop_and_volume_dispensed(
    client: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ok(client.ask("0DIRINF"))
    ok(client.ask("0DIR"), data="INF")
    ok(client.ask("0RAT10MH"))
    ok(client.ask("0RUN"), NeStatus.INFUSING)
    clock.advance(1800)
    ok(client.ask("0DIS"), NeStatus.INFUSING, "I5.000W0.000ML")
    ok(client.ask("0STP"), NeStatus.PAUSED)
    assert model.snapshot().state is PumpState.PAUSED
    clock.advance(1800)
    ok(client.ask("0DIS"), NeStatus.PAUSED, "I5.000W0.000ML")
    ok(client.ask("0RUN"), NeStatus.INFUSING)  # resumes
    ok(client.ask("0STP"), NeStatus.PAUSED)
    ok(client.ask("0STP"))  # a second STP clears the pause
    assert model.snapshot().state is PumpState.STOPPED
    ok(client.ask("0CLDINF"))
    ok(client.ask("0DIS"), data="I0.000W0.000ML")
    ok(client.ask("0CLDWDR"))


def test_the_pump_stops_itself_at_the_vtbi_and_shows_stopped(
    client: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ok(client.ask("0RAT60MH"))
    ok(client.ask("0VOL1"))
    ok(client.ask("0RUN"), NeStatus.INFUSING)
    clock.advance(120)
    ok(client.ask("0DIS"), data="I1.000W0.000ML")
    assert PumpAlarm.VTBI_COMPLETE in model.snapshot().alarms  # advisory: no NE alarm for it


def test_withdrawing_purging_and_run_refusals_are_not_applicable(
    client: RawClient, model: PumpModel
) -> None:
    error(client.ask("0DIRWDR"), NeErrorCode.NOT_APPLICABLE)
    error(client.ask("0DIRREV"), NeErrorCode.NOT_APPLICABLE)
    error(client.ask("0PUR"), NeErrorCode.NOT_APPLICABLE)
    error(client.ask("0RUN"), NeErrorCode.NOT_APPLICABLE)  # rate 0: the model refuses
    assert model.snapshot().state is PumpState.STOPPED


def test_unknown_commands_are_not_recognised(client: RawClient) -> None:
    error(client.ask("0XYZ"), NeErrorCode.NOT_RECOGNISED)
    error(client.ask("0CLD"), NeErrorCode.NOT_RECOGNISED)
    error(client.ask("0DIRX"), NeErrorCode.NOT_RECOGNISED)


def test_stored_settings_echo_and_the_address_cannot_change(client: RawClient) -> None:
    for mnemonic in ("PF", "AL", "LOC"):
        ok(client.ask(f"0{mnemonic}"), data="0")
        ok(client.ask(f"0{mnemonic}1"))
        ok(client.ask(f"0{mnemonic}"), data="1")
        error(client.ask(f"0{mnemonic}2"), NeErrorCode.OUT_OF_RANGE)
    ok(client.ask("0BUZ1"))
    ok(client.ask("0BUZ"), data="1")
    ok(client.ask("0ADR"), data="0")
    error(client.ask("0ADR5"), NeErrorCode.NOT_APPLICABLE)


def test_commands_for_another_address_are_ignored(
    client: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ok(client.ask("0SAF0"))
    model.set_watchdog(5.0)  # armed; safe mode
    clock.advance(4)
    client.send("1", Framing.SAFE)
    client.send("12VER", Framing.SAFE)
    assert client.silent()
    clock.advance(2)  # the other pumps' packets did not feed this pump's watchdog
    assert PumpAlarm.COMM_TIMEOUT in model.snapshot().alarms


# --- safe mode, watchdog, alarms ------------------------------------------------------------


def test_safe_mode_replies_in_safe_framing_and_refuses_bad_packets(
    client: RawClient, model: PumpModel
) -> None:
    frame = client.ask_frame("0SAF5", Framing.SAFE)
    assert frame.framing is Framing.SAFE  # answered in the mode it is now in
    assert model.snapshot().watchdog_timeout_s == 5.0
    frame = client.ask_frame("0SAF", Framing.SAFE)
    assert frame.framing is Framing.SAFE
    ok(frame.reply, data="5")
    # A bad CRC, a bad ETX, and a basic line in safe mode: ?COM, in safe framing.
    packet = bytearray(encode_safe_packet(b"0VER"))
    packet[-2] ^= 0xFF
    client.send_raw(bytes(packet))
    frame = client.reply()
    assert frame.framing is Framing.SAFE
    error(frame.reply, NeErrorCode.BAD_PACKET)
    packet = bytearray(encode_safe_packet(b"0VER"))
    packet[-1] = 0x04
    client.send_raw(bytes(packet))
    error(client.reply().reply, NeErrorCode.BAD_PACKET)
    error(client.ask("0VER"), NeErrorCode.BAD_PACKET)
    ok(client.ask("0VER", Framing.SAFE), data="NE1000V3.928")
    frame = client.ask_frame("0SAF0", Framing.SAFE)
    assert frame.framing is Framing.BASIC
    assert model.snapshot().watchdog_timeout_s == 0.0


def test_safe_mode_refuses_a_timeout_above_255(client: RawClient) -> None:
    error(client.ask("0SAF256", Framing.SAFE), NeErrorCode.OUT_OF_RANGE)
    error(client.ask("0SAFX", Framing.SAFE), NeErrorCode.OUT_OF_RANGE)


def test_a_bad_crc_in_basic_mode_is_also_com(client: RawClient) -> None:
    packet = bytearray(encode_safe_packet(b"0"))
    packet[2] ^= 0x01
    client.send_raw(bytes(packet))
    frame = client.reply()
    assert frame.framing is Framing.BASIC
    error(frame.reply, NeErrorCode.BAD_PACKET)


def test_valid_packets_feed_the_watchdog(
    client: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ok(client.ask("0SAF5", Framing.SAFE))
    for _ in range(4):
        clock.advance(4)
        ok(client.ask("0", Framing.SAFE))
    assert model.snapshot().alarms == frozenset()


def test_watchdog_expiry_stops_the_pump_sends_an_alarm_and_reports_it_once(
    client: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ok(client.ask("0RAT10MH"))
    ok(client.ask("0SAF5", Framing.SAFE))
    ok(client.ask("0RUN", Framing.SAFE), NeStatus.INFUSING)
    clock.advance(5.5)
    # The pump sends the alarm packet on its own, in safe framing.
    frame = client.reply()
    assert frame.framing is Framing.SAFE
    assert frame.reply.alarm is NeAlarm.SAFE_TIMEOUT
    snapshot = model.snapshot()
    assert snapshot.state is PumpState.ALARM
    assert snapshot.volume_infused_ml == pytest.approx(10 * 5 / 3600)  # stopped at 5 s exactly
    # The auto-sent packet did not clear it: the next reply carries it, and clears it.
    assert client.ask("0", Framing.SAFE).alarm is NeAlarm.SAFE_TIMEOUT
    assert model.snapshot().state is PumpState.STOPPED
    ok(client.ask("0", Framing.SAFE))
    assert client.silent()


def test_an_alarm_reply_replaces_the_reply_of_the_command_carried_out(
    client: RawClient, model: PumpModel
) -> None:
    model.power_loss()
    assert client.ask("0RAT20MH").alarm is NeAlarm.RESET
    assert model.snapshot().rate_setpoint_ml_per_h == 20.0  # carried out all the same
    ok(client.ask("0RAT"), data="20.00MH")


def test_power_loss_is_reported_as_reset_once_and_never_restarts(
    client: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ok(client.ask("0RAT10MH"))
    ok(client.ask("0RUN"), NeStatus.INFUSING)
    clock.advance(60)
    model.power_loss()
    assert client.ask("0").alarm is NeAlarm.RESET
    ok(client.ask("0"))
    assert model.snapshot().state is PumpState.STOPPED
    assert model.snapshot().alarms == frozenset()


def test_a_power_loss_latched_before_the_server_started_is_reported(
    model: PumpModel, listen: str
) -> None:
    model.power_loss()
    with NeweraSimulatorServer(model, listen=listen) as server:
        client = RawClient(server)
        try:
            assert client.ask("0SAF0", Framing.SAFE).alarm is NeAlarm.RESET
            ok(client.ask("0SAF0", Framing.SAFE))
        finally:
            client.close()


def test_a_basic_mode_pump_sends_no_alarm_on_its_own(client: RawClient, model: PumpModel) -> None:
    model.power_loss()
    assert client.silent()
    assert client.ask("0").alarm is NeAlarm.RESET


def test_stalls_are_reported_as_motor_stalled(
    client: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ok(client.ask("0RAT10MH"))
    ok(client.ask("0RUN"), NeStatus.INFUSING)
    model.inject(PumpAlarm.OCCLUSION)
    assert client.ask("0").alarm is NeAlarm.STALLED
    error(client.ask("0RUN"), NeErrorCode.NOT_APPLICABLE)  # the occlusion is still there
    model.clear_condition(PumpAlarm.OCCLUSION)
    # The stall was reported once, and its condition is gone: on an NE-1000 that clears it.
    ok(client.ask("0RUN"), NeStatus.INFUSING)


# --- real-time rules and line faults --------------------------------------------------------


def test_a_half_second_gap_inside_a_safe_packet_discards_it(client: RawClient) -> None:
    packet = encode_safe_packet(b"0VER")
    client.send_raw(packet[:4])
    time.sleep(0.7)  # the pump's own real-time rule
    client.send_raw(packet[4:])
    client.send("0", Framing.SAFE)
    items = client.items(count=2, wait_s=0.5)
    assert len(items) == 1
    assert isinstance(items[0], ReplyFrame)
    ok(items[0].reply)  # the status query only: VER was dropped


def test_a_packet_split_without_a_gap_is_read(client: RawClient) -> None:
    packet = encode_safe_packet(b"0VER")
    client.send_raw(packet[:4])
    time.sleep(0.1)
    client.send_raw(packet[4:])
    ok(client.reply().reply, data="NE1000V3.928")


def test_a_hung_line_answers_nothing_and_does_not_feed_the_watchdog(
    client: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ok(client.ask("0SAF5", Framing.SAFE))
    model.line.hang = True
    clock.advance(3)
    client.send("0", Framing.SAFE)
    assert client.silent()
    clock.advance(3)
    assert PumpAlarm.COMM_TIMEOUT in model.snapshot().alarms
    assert client.silent()  # no alarm packet either: the line is dead
    model.line.hang = False
    assert client.ask("0", Framing.SAFE).alarm is NeAlarm.SAFE_TIMEOUT


def test_slow_replies_wait_the_delay_in_real_seconds_on_a_manual_clock(
    client: RawClient, model: PumpModel
) -> None:
    model.line.reply_delay_s = 0.3
    started = time.monotonic()
    ok(client.ask("0"))
    assert time.monotonic() - started >= 0.28


def test_slow_replies_wait_the_delay_scaled_on_a_scaled_clock(listen: str) -> None:
    model = PumpModel(ScaledClock(100.0))
    model.line.reply_delay_s = 30.0  # simulated seconds: 0.3 real seconds at x100
    with NeweraSimulatorServer(model, listen=listen) as server:
        client = RawClient(server)
        try:
            started = time.monotonic()
            ok(client.ask("0"))
            elapsed = time.monotonic() - started
            assert 0.28 <= elapsed < 2.0
        finally:
            client.close()


def test_garbage_before_replies_is_skipped_by_a_decoder(
    client: RawClient, model: PumpModel
) -> None:
    model.line.garbage_probability = 1.0
    for _ in range(5):
        client.send("0VER")
        items = client.items()
        frames = [item for item in items if isinstance(item, ReplyFrame)]
        while not frames:
            more = client.items()
            assert more, "no reply behind the garbage"
            frames = [item for item in more if isinstance(item, ReplyFrame)]
        ok(frames[0].reply, data="NE1000V3.928")
    assert len(client.raw) > 5 * len(b"\x0200SNE1000V3.928\x03")


def test_corrupted_safe_replies_fail_their_crc(client: RawClient, model: PumpModel) -> None:
    ok(client.ask("0SAF5", Framing.SAFE))
    model.line.corrupt_probability = 1.0
    bad = 0
    for _ in range(5):
        client.send("0VER", Framing.SAFE)
        items = client.items(wait_s=0.3)
        bad += all(not isinstance(item, ReplyFrame) for item in items)
        assert all(not isinstance(item, ReplyFrame) or item.reply.data for item in items)
        client.decoder.discard_pending()
    assert bad == 5
    model.line.corrupt_probability = 0.0
    ok(client.ask("0VER", Framing.SAFE), data="NE1000V3.928")


def test_corrupted_basic_replies_show_up_as_bad_frames_or_wrong_text(
    client: RawClient, model: PumpModel
) -> None:
    model.line.corrupt_probability = 1.0
    client.send("0VER")
    received = client.items(wait_s=0.3)
    assert not any(
        isinstance(item, ReplyFrame) and item.reply.data == "NE1000V3.928" for item in received
    )
    assert all(isinstance(item, ReplyFrame | FrameError) or item for item in received)


# --- TCP specifics --------------------------------------------------------------------------


def test_tcp_serves_one_client_at_a_time_and_the_next_after_a_disconnect(
    model: PumpModel,
) -> None:
    with NeweraSimulatorServer(model, listen="tcp://127.0.0.1:0") as server:
        first = RawClient(server)
        ok(first.ask("0VER"), data="NE1000V3.928")
        second = RawClient(server)
        second.send("0VER")
        with pytest.raises((serial.SerialException, OSError)):
            second.items(wait_s=0.5)  # the server hung up on it
        second.close()
        ok(first.ask("0"))
        first.close()
        third = RawClient(server)
        ok(third.ask("0VER"), data="NE1000V3.928")
        third.close()


def test_a_pty_client_may_come_and_go(model: PumpModel) -> None:
    with NeweraSimulatorServer(model) as server:
        for _ in range(3):
            client = RawClient(server)
            ok(client.ask("0VER"), data="NE1000V3.928")
            client.close()


def test_another_model_and_diameter_can_be_served(model: PumpModel) -> None:
    from protocol.newera import FirmwareVersion

    with NeweraSimulatorServer(
        model, version=FirmwareVersion(500, "2.0"), diameter_mm=Decimal("4.7")
    ) as server:
        client = RawClient(server)
        try:
            ok(client.ask("0VER"), data="NE500V2.0")
            ok(client.ask("0VOL"), data="0.000UL")
        finally:
            client.close()


def test_command_objects_round_trip_through_the_simulator(client: RawClient) -> None:
    command = Command(Mnemonic.VERSION, address=0)
    client.send_raw(encode_command(command, Framing.SAFE))
    ok(client.reply().reply, data="NE1000V3.928")
