"""Recording the wire (``record=FILE``): true bytes, a versioned format, and never in the way.

Replaying what is recorded here: tests/simulator/test_replay.py.
"""

from __future__ import annotations

import errno
import io
import json
import threading
from pathlib import Path

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

import drivers.recording
from drivers import make_pump
from drivers.base import PumpDriver
from drivers.errors import DriverConfigError
from drivers.recording import WireTap
from drivers.url import SCHEMES, parse_pump_url
from gateway.cli import main
from gateway.config import build_config
from protocol.clock import ManualClock
from protocol.newera import Command, Framing, Mnemonic, encode_command
from protocol.recording import (
    FORMAT_NAME,
    FORMAT_VERSION,
    RECORDED_PROTOCOLS,
    Recording,
    RecordingFormatError,
    RecordingHeader,
    WireRecord,
    decode_recording,
    encode_header,
    encode_record,
)
from simulator.newera_server import NeweraSimulatorServer
from simulator.server import SimulatorServer

pytestmark = pytest.mark.timeout(30)

TIMEOUT_S = 0.3


def recording_pump(url: str, path: Path | str) -> PumpDriver:
    return make_pump(f"{url}{'&' if '?' in url else '?'}record={path}", timeout_s=TIMEOUT_S)


def read(path: Path) -> Recording:
    return decode_recording(path.read_text())


def test_an_ne1000_session_is_recorded_byte_for_byte_with_a_header(
    tmp_path: Path, server: NeweraSimulatorServer
) -> None:
    path = tmp_path / "bed.jsonl"
    pump = recording_pump(server.pump_url, path)
    try:
        identity = pump.open()
        pump.read_status()
    finally:
        pump.close()
    recording = read(path)
    header = json.loads(path.read_text().splitlines()[0])
    assert header["format"] == FORMAT_NAME
    assert header["version"] == FORMAT_VERSION
    assert recording.header.protocol == "newera"
    assert recording.header.url == server.pump_url  # without the record option
    assert recording.header.gateway_version
    first = recording.records[0]
    assert (first.dir, first.data) == (
        "tx",
        encode_command(Command(Mnemonic.VERSION, "", 0), Framing.SAFE),
    )
    received = b"".join(r.data for r in recording.records if r.dir == "rx")
    assert identity.firmware.encode() in received
    times = [r.t for r in recording.records]
    assert times == sorted(times)
    assert {r.dir for r in recording.records} == {"tx", "rx"}


@pytest.mark.parametrize("sim_protocol", ["modbus"])  # on its default line: TCP
def test_a_modbus_tcp_session_is_recorded_with_its_mbap_frames(
    tmp_path: Path, sim_server: SimulatorServer
) -> None:
    path = tmp_path / "bed.jsonl"
    pump = recording_pump(sim_server.pump_url, path)
    try:
        pump.open()
        pump.read_status()
    finally:
        pump.close()
    recording = read(path)
    assert recording.header.protocol == "modbus+tcp"
    request, reply = recording.records[0].data, recording.records[1].data
    assert recording.records[0].dir == "tx"
    assert request[7] == 3  # read holding registers: the identification block
    assert reply[:2] == request[:2]  # its transaction id
    assert int.from_bytes(reply[4:6], "big") == len(reply) - 6  # one whole MBAP frame


class _Port:
    """A serial port stand-in: ``read`` gives what the pump queued, ``write`` is kept."""

    def __init__(self, incoming: bytes = b"") -> None:
        self.incoming = incoming
        self.sent = b""

    def read(self, size: int = 1) -> bytes:
        data, self.incoming = self.incoming[:size], self.incoming[size:]
        return data

    def write(self, data: bytes) -> int:
        self.sent += data
        return len(data)


def test_timestamps_come_from_the_injected_clock_and_a_reconnect_appends(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "tap.jsonl"
    tap = WireTap(str(path), url=parse_pump_url("newera:///dev/ttyS0"), clock=clock.monotonic)
    inner = _Port(b"\x0200S\x03")
    port = tap.attach(inner)
    clock.advance(1.5)
    port.write(b"0VER\r")
    clock.advance(0.25)
    assert port.read(6) == b"\x0200S\x03"
    port.timeout = 0.5  # attributes set go to the port itself
    tap.detach()
    again = tap.attach(_Port())
    clock.advance(10)
    again.write(b"0DIS\r")
    tap.detach()
    recording = read(path)
    assert [(r.t, r.dir, r.data) for r in recording.records] == [
        (1.5, "tx", b"0VER\r"),
        (1.75, "rx", b"\x0200S\x03"),
        (11.75, "tx", b"0DIS\r"),
    ]
    assert path.read_text().count(FORMAT_NAME) == 1  # one header
    assert (inner.sent, inner.timeout) == (b"0VER\r", 0.5)  # type: ignore[attr-defined]


# -- the format ------------------------------------------------------------------------------

_records = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
        st.sampled_from(["tx", "rx"]),
        st.binary(min_size=1, max_size=64),
    ),
    max_size=20,
)


@given(
    records=_records,
    protocol=st.sampled_from(RECORDED_PROTOCOLS),
    url=st.text(min_size=1, max_size=80),
)
def test_property_the_format_round_trips(
    records: list[tuple[float, str, bytes]], protocol: str, url: str
) -> None:
    header = RecordingHeader.new(
        protocol=protocol,  # type: ignore[arg-type]
        url=url,
        gateway_version="0.1.0",
        started_at="2025-01-01T00:00:00.000000Z",
    )
    ordered = sorted(records, key=lambda record: record[0])
    lines = [encode_record(WireRecord.of(t, d, data)) for t, d, data in ordered]  # type: ignore[arg-type]
    text = encode_header(header) + "".join(lines)
    assert all(line.count("\n") == 1 for line in lines)
    recording = decode_recording(text)
    assert recording.header == header
    assert [(r.t, r.dir, r.data) for r in recording.records] == ordered


@given(st.text(max_size=300))
def test_property_any_text_decodes_or_is_refused_with_a_line(text: str) -> None:
    try:
        decode_recording(text)
    except RecordingFormatError as exc:
        refused = exc
    else:
        return
    assert 1 <= refused.line <= text.count("\n") + 1
    assert f"recording line {refused.line}" in str(refused)


def test_recorded_protocols_are_the_pump_url_schemes() -> None:
    assert set(RECORDED_PROTOCOLS) == set(SCHEMES)


# -- never in the way of control -------------------------------------------------------------


def recording_failures(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == "recording_failed"]


def test_a_recording_that_cannot_be_created_is_logged_once_and_control_goes_on(
    tmp_path: Path, server: NeweraSimulatorServer
) -> None:
    with structlog.testing.capture_logs() as logs:
        pump = recording_pump(server.pump_url, tmp_path / "missing" / "bed.jsonl")
        try:
            pump.open()
            statuses = [pump.read_status() for _ in range(3)]
        finally:
            pump.close()
    assert len(statuses) == 3
    (failure,) = recording_failures(logs)
    assert "cannot create the file" in str(failure["reason"])
    assert not (tmp_path / "missing").exists()


def test_an_existing_file_is_never_overwritten(
    tmp_path: Path, server: NeweraSimulatorServer
) -> None:
    evidence = tmp_path / "bed.jsonl"
    evidence.write_text("yesterday's field recording\n")
    with structlog.testing.capture_logs() as logs:
        pump = recording_pump(server.pump_url, evidence)
        try:
            pump.open()
            pump.read_status()
        finally:
            pump.close()
    assert evidence.read_text() == "yesterday's field recording\n"
    (failure,) = recording_failures(logs)
    assert "exists already" in str(failure["reason"])


class _FullDisk(io.StringIO):
    """A file whose writes fail after the first (the header): a disk that fills up."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)


def test_a_write_failure_stops_recording_once_and_never_reaches_a_command(
    tmp_path: Path, server: NeweraSimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _FullDisk()
    monkeypatch.setattr(drivers.recording, "_open_new", lambda path: disk)
    with structlog.testing.capture_logs() as logs:
        pump = recording_pump(server.pump_url, tmp_path / "bed.jsonl")
        try:
            pump.open()
            statuses = [pump.read_status() for _ in range(5)]
        finally:
            pump.close()
    assert all(status.rate_ml_per_h == 0.0 for status in statuses)
    (failure,) = recording_failures(logs)
    assert "No space left on device" in str(failure["reason"])
    assert disk.writes == 2  # the header, then one failed line: nothing tried after that


def test_a_stalled_disk_never_blocks_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    class _Stalled(io.StringIO):
        def write(self, text: str) -> int:
            release.wait(timeout=10)
            return super().write(text)

    monkeypatch.setattr(drivers.recording, "QUEUE_LIMIT", 2)
    monkeypatch.setattr(drivers.recording, "_open_new", lambda path: _Stalled())
    tap = WireTap(str(tmp_path / "t.jsonl"), url=parse_pump_url("newera:///dev/ttyS0"))
    with structlog.testing.capture_logs() as logs:
        port = tap.attach(_Port())
        for _ in range(50):  # far more than the queue holds, while the writer is stuck
            port.write(b"0DIS\r")
        assert tap.failed
        release.set()
        tap.detach()
    (failure,) = recording_failures(logs)
    assert "fell behind" in str(failure["reason"])


# -- where the option is accepted ------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "dir/", "a%00b"])
def test_a_record_option_that_is_not_a_file_path_is_refused_naming_it(value: str) -> None:
    with pytest.raises(DriverConfigError, match=r"pump URL parameter 'record'"):
        make_pump(f"newera:///dev/ttyUSB0?record={value}")


def test_the_daemon_config_accepts_a_recording_pump_url(tmp_path: Path) -> None:
    pump = f"modbus+tcp://127.0.0.1:5020?unit=2&record={tmp_path / 'bed1.jsonl'}"
    config = build_config(
        {"state_dir": str(tmp_path / "state"), "channels": [{"id": "bed1", "pump": pump}]}
    )
    assert config.channels[0].pump == pump


def test_pump_command_records_with_record_flag(
    tmp_path: Path, server: NeweraSimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bedside.jsonl"
    assert main(["pump", "status", "--url", server.pump_url, "--record", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)  # stdout stays the answer alone
    assert status["state"] == "stopped"
    assert read(path).records
    assert main(["pump", "status", "--url", server.pump_url, "--record", str(path)]) == 2
    assert "--record" in capsys.readouterr().err
