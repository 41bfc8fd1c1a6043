"""Replay: a recorded NE-1000 or Modbus session, served back, is byte-identical for the driver.

Each test records a session of the real driver against the software pump (``record=`` URL
option), replays the file with :class:`~simulator.replay.ReplayServer` to a fresh driver making
the same calls (itself recording), and compares the two files exchange by exchange and the typed
results call by call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import structlog

from drivers import make_pump
from drivers.base import PumpDriver
from drivers.errors import PumpProtocolError, PumpTimeoutError
from gateway.cli import main
from gateway.safety import check_rate
from protocol.clock import ManualClock
from protocol.newera import Command, Framing, Mnemonic, encode_command
from protocol.recording import (
    RecordingFormatError,
    RecordingHeader,
    WireRecord,
    encode_header,
    encode_record,
    exchanges,
)
from simulator.modbus_server import ModbusSimulatorServer
from simulator.model import PumpModel
from simulator.newera_server import NeweraSimulatorServer
from simulator.replay import (
    MODBUS_MISMATCH_EXCEPTION,
    ReplayMismatchError,
    ReplayServer,
    ReplaySession,
    load_recording,
)

pytestmark = pytest.mark.timeout(30)

TIMEOUT_S = 0.3
WEIGHT_KG = 70.0

Server = NeweraSimulatorServer | ModbusSimulatorServer
#: (protocol, transport) -> a running software pump on that wire
WIRES: dict[str, tuple[str, str]] = {
    "newera-pty": ("newera", "pty"),
    "newera-tcp": ("newera", "tcp://127.0.0.1:0"),
    "modbus-tcp": ("modbus", "tcp://127.0.0.1:0"),
    "modbus-rtu": ("modbus", "pty"),
}


def software_pump(wire: str, model: PumpModel) -> AbstractContextManager[Server]:
    protocol, listen = WIRES[wire]
    if protocol == "newera":
        return NeweraSimulatorServer(model, listen=listen)
    return ModbusSimulatorServer(model, listen=listen)


def with_option(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


def course(pump: PumpDriver, advance: Callable[[], None]) -> list[object]:
    """The calls made when recording and again when replaying; their typed results."""
    results: list[object] = [pump.open(), pump.read_status()]
    results.append(pump.set_rate(check_rate(5.0, weight_kg=WEIGHT_KG)))
    pump.start()
    advance()
    results.append(pump.read_status())
    pump.stop()
    results.append(pump.read_status())
    return results


def run_course(url: str, record: Path, advance: Callable[[], None]) -> list[object]:
    pump = make_pump(with_option(url, f"record={record}"), timeout_s=TIMEOUT_S, retries=0)
    try:
        return course(pump, advance)
    finally:
        pump.close()


def wire_exchanges(path: Path) -> list[tuple[bytes, bytes]]:
    return [(e.request, e.reply) for e in exchanges(load_recording(path))[1]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def recorded(tmp_path: Path, clock: ManualClock) -> Callable[[str], tuple[Path, list[object]]]:
    """Record ``course`` against the software pump on a wire: (file, typed results)."""

    def record(wire: str) -> tuple[Path, list[object]]:
        path = tmp_path / f"{wire}.jsonl"
        model = PumpModel(clock, max_rate_ml_per_h=100.0)
        with software_pump(wire, model) as server:
            results = run_course(server.pump_url, path, lambda: clock.advance(600))
        return path, results

    return record


@pytest.mark.parametrize("wire", sorted(WIRES))
def test_a_recorded_session_replays_byte_identically_with_the_same_typed_results(
    wire: str, tmp_path: Path, recorded: Callable[[str], tuple[Path, list[object]]]
) -> None:
    path, results = recorded(wire)
    recording = load_recording(path)
    with ReplayServer(recording) as replay:  # on the kind of line it was recorded on
        replayed = run_course(replay.pump_url, tmp_path / "replayed.jsonl", lambda: None)
        summary = replay.session.summary()
    assert replayed == results
    assert results[3].volume_infused_ml > 0  # type: ignore[attr-defined]  # it did infuse
    assert wire_exchanges(tmp_path / "replayed.jsonl") == wire_exchanges(path)
    assert summary == {
        "exchanges": len(exchanges(recording)[1]),
        "replayed": len(exchanges(recording)[1]),
        "mismatches": 0,
        "complete": True,
    }


def test_an_ne1000_recording_replays_on_tcp_too(
    tmp_path: Path, recorded: Callable[[str], tuple[Path, list[object]]]
) -> None:
    path, results = recorded("newera-pty")
    with ReplayServer(load_recording(path), listen="tcp://127.0.0.1:0") as replay:
        assert replay.pump_url.startswith("newera+tcp://127.0.0.1:")
        replayed = run_course(replay.pump_url, tmp_path / "replayed.jsonl", lambda: None)
    assert replayed == results


@pytest.mark.parametrize("wire", ["newera-pty", "modbus-tcp"])
def test_a_request_the_recording_does_not_have_is_reported_and_not_answered_as_recorded(
    wire: str, tmp_path: Path, recorded: Callable[[str], tuple[Path, list[object]]]
) -> None:
    path, _ = recorded(wire)
    reported: list[ReplayMismatchError] = []
    _, listen = WIRES[wire]
    with (
        structlog.testing.capture_logs() as logs,
        ReplayServer(load_recording(path), listen=listen, on_mismatch=reported.append) as replay,
    ):
        pump = make_pump(replay.pump_url, timeout_s=TIMEOUT_S, retries=0)
        try:
            pump.open()
            expected_error = PumpTimeoutError if wire.startswith("newera") else PumpProtocolError
            with pytest.raises(expected_error):
                pump.start()  # the recording reads the status next, it never started here
            assert pump.read_status() is not None  # still in step: the next one matches
        finally:
            pump.close()
        session = replay.session
    assert len(reported) == 1
    assert session.mismatches == reported
    mismatch = reported[0]
    assert mismatch.expected == session.exchanges[mismatch.exchange - 1].request  # type: ignore[operator]
    assert mismatch.received != mismatch.expected
    assert mismatch.line == session.exchanges[mismatch.exchange - 1].line  # type: ignore[operator]
    events = [e for e in logs if e["event"] == "replay_mismatch"]
    assert [(e["expected"], e["received"]) for e in events] == [
        (mismatch.expected.hex(), mismatch.received.hex())  # type: ignore[union-attr]
    ]
    assert session.replayed > 0
    assert not session.complete


# -- the session alone (no I/O) ----------------------------------------------------------------


def recording_text(protocol: str, *records: tuple[str, bytes]) -> str:
    header = RecordingHeader.new(
        protocol=protocol,  # type: ignore[arg-type]
        url=f"{protocol}://127.0.0.1:502" if "tcp" in protocol else f"{protocol}:///dev/ttyS0",
        gateway_version="0.1.0",
        started_at="2025-01-01T00:00:00.000000Z",
    )
    lines = [encode_header(header)]
    lines += [
        encode_record(WireRecord.of(i / 1000, d, data)) for i, (d, data) in enumerate(records)
    ]
    return "".join(lines)


def session_of(tmp_path: Path, protocol: str, *records: tuple[str, bytes]) -> ReplaySession:
    path = tmp_path / "r.jsonl"
    path.write_text(recording_text(protocol, *records))
    return ReplaySession(load_recording(path))


def mbap(tid: int, pdu: bytes, unit: int = 1) -> bytes:
    return (
        tid.to_bytes(2, "big") + b"\0\0" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu
    )


def test_modbus_tcp_transaction_ids_are_the_clients_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    read = bytes([3, 0, 0, 0, 1])
    answer = bytes([3, 2, 0, 42])
    session = session_of(tmp_path, "modbus+tcp", ("tx", mbap(7, read)), ("rx", mbap(7, answer)))
    request = mbap(0x1234, read)
    assert session.feed(request[:5]) == b""  # half a request: wait
    assert session.feed(request[5:]) == mbap(0x1234, answer)
    assert session.complete
    assert session.mismatches == []


def test_a_modbus_request_that_does_not_match_is_answered_with_exception_04(
    tmp_path: Path,
) -> None:
    session = session_of(tmp_path, "modbus+tcp", ("tx", mbap(1, bytes([3, 0, 0, 0, 1]))))
    answer = session.feed(mbap(9, bytes([6, 0, 5, 0, 1])))
    assert answer == mbap(9, bytes([6 | 0x80, MODBUS_MISMATCH_EXCEPTION]))
    assert session.replayed == 0
    assert session.mismatches[0].exchange == 1
    assert session.mismatches[0].line == 2


def test_a_request_after_the_end_of_the_recording_is_a_mismatch(tmp_path: Path) -> None:
    session = session_of(tmp_path, "newera", ("tx", b"0VER\r"), ("rx", b"\x0200S\x03"))
    assert session.feed(b"0VER\r") == b"\x0200S\x03"
    assert session.feed(b"0VER\r") == b""
    (mismatch,) = session.mismatches
    assert mismatch.expected is None
    assert mismatch.received == b"0VER\r"
    assert "after the last recorded exchange" in str(mismatch)


def test_what_the_pump_sent_before_the_first_request_is_the_greeting(tmp_path: Path) -> None:
    session = session_of(tmp_path, "newera", ("rx", b"\x0200A?R\x03"), ("tx", b"0DIS\r"))
    assert session.greeting == b"\x0200A?R\x03"
    assert session.feed(b"0DIS\r") == b""  # recorded: no answer
    assert session.complete


# -- refusing a corrupt recording --------------------------------------------------------------


@pytest.mark.parametrize(
    ("corrupt", "line", "field"),
    [
        (lambda text: text[:-1], 3, None),  # cut off mid-line
        (lambda text: text.replace('"dir":"tx"', '"dir":"up"'), 2, "dir"),
        (lambda text: text.replace('"hex":"30', '"hex":"3'), 2, "hex"),
        (lambda text: text.replace('"t":0.0', '"t":-1.0'), 2, "t"),
        (lambda text: text.replace('"t":0.001', '"t":"soon"'), 3, "t"),
        (lambda text: text.replace('"version":1', '"version":2'), 1, "version"),
        (lambda text: text.replace('"protocol":"newera"', '"protocol":"can"'), 1, "protocol"),
        (lambda text: "not json\n" + text, 1, None),
        (lambda text: text.replace('{"t":0.0,', '{"t":0.0,"extra":1,'), 2, "extra"),
        (lambda text: "", 1, None),
    ],
)
def test_a_corrupt_or_truncated_recording_is_refused_naming_line_and_field(
    tmp_path: Path, corrupt: Callable[[str], str], line: int, field: str | None
) -> None:
    path = tmp_path / "bad.jsonl"
    text = recording_text("newera", ("tx", b"0VER\r"), ("rx", b"\x0200S\x03"))
    path.write_text(corrupt(text))
    with pytest.raises(RecordingFormatError) as refused:
        load_recording(path)
    assert refused.value.line == line
    assert refused.value.field == field
    assert f"recording line {line}" in str(refused.value)


def test_the_replay_command_refuses_a_corrupt_recording_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(recording_text("newera", ("tx", b"0VER\r")).replace('"dir":"tx"', '"dir":"x"'))
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "recording line 2, field 'dir'" in err


# -- the command, as a process ----------------------------------------------------------------


@pytest.fixture
def replay_process(
    recorded: Callable[[str], tuple[Path, list[object]]],
) -> Iterator[tuple[subprocess.Popen[str], dict[str, object], list[object]]]:
    path, results = recorded("newera-tcp")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "replay", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        yield process, first, results
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_the_replay_command_serves_the_recording_reports_a_mismatch_and_ends_with_a_summary(
    tmp_path: Path,
    replay_process: tuple[subprocess.Popen[str], dict[str, object], list[object]],
) -> None:
    process, first, results = replay_process
    assert str(first["listening"]).startswith("tcp://127.0.0.1:")
    pump_url = str(first["pump_url"])
    replayed = run_course(pump_url, tmp_path / "replayed.jsonl", lambda: None)
    extra = make_pump(pump_url, timeout_s=TIMEOUT_S, retries=0)
    try:
        with pytest.raises(PumpTimeoutError):
            extra.read_status()  # one more request than was recorded
    finally:
        extra.close()
    process.terminate()
    out, err = process.communicate(timeout=10)
    assert replayed == results
    assert json.loads(out.strip().splitlines()[-1]) == {
        "exchanges": first["exchanges"],
        "replayed": first["exchanges"],
        "mismatches": 1,
        "complete": True,
    }
    assert process.returncode == 1
    (line,) = [line for line in err.splitlines() if "replay_mismatch" in line]
    dis = encode_command(Command(Mnemonic.DISPENSED, "", 0), Framing.SAFE)
    assert json.loads(line)["received"] == dis.hex()
    assert json.loads(line)["expected"] is None  # the recording was used up
