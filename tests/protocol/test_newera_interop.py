"""The codec against the unmodified nesp-lib 2.0.0 client.

nesp-lib's ``Pump`` talks to a duck-typed port; here the port is an in-memory answering machine
built from this codec only (decode what nesp-lib sends, encode what a pump replies).  That checks
both directions byte for byte: our decoder reads nesp-lib's commands, and nesp-lib's own reply
parser accepts our replies, in basic and safe mode.  It is not the simulator: it only answers.
"""

from __future__ import annotations

from decimal import Decimal

import nesp_lib
import pytest
from hypothesis import given

from protocol.newera import (
    Command,
    CommandFrame,
    CommandItem,
    CommandStreamDecoder,
    FrameError,
    Framing,
    Mnemonic,
    NeAlarm,
    NeErrorCode,
    NeStatus,
    RateUnit,
    Reply,
    VolumeUnit,
    encode_command,
    encode_reply,
    format_dispensed,
    format_display_number,
    split_rate_argument,
)
from tests.protocol.test_newera_framing import commands, replies


class CodecPort:
    """Stands in for ``nesp_lib.Port``: answers each command with this codec's replies."""

    def __init__(self) -> None:
        self._decoder = CommandStreamDecoder()
        self._outgoing = bytearray()
        self._alarm: NeAlarm | None = NeAlarm.RESET  # as after power-up
        self._safe = False
        self._status = NeStatus.STOPPED
        self._rate: tuple[Decimal, RateUnit] = (Decimal(0), RateUnit.ML_PER_H)
        self.received: list[bytes] = []
        self.framings: list[Framing] = []

    # The private interface nesp_lib.Pump uses.
    def _transmit(self, data: bytes) -> None:
        self.received.append(data)
        for item in self._decoder.feed(data):
            reply = self._answer(item)
            self._outgoing += encode_reply(reply, Framing.SAFE if self._safe else Framing.BASIC)

    def _receive(self, data_length: int) -> bytes:
        if len(self._outgoing) < data_length:
            raise AssertionError("nesp-lib waits for bytes this port will never send")
        chunk = bytes(self._outgoing[:data_length])
        del self._outgoing[:data_length]
        return chunk

    @property
    def _waiting_receive(self) -> int:
        return len(self._outgoing)

    @property
    def _waiting_transmit(self) -> int:
        return 0

    def close(self) -> None:
        """Nothing to close."""

    def _answer(self, item: CommandItem) -> Reply:
        if isinstance(item, FrameError):
            return Reply(0, self._status, error=NeErrorCode.BAD_PACKET)
        if not isinstance(item, CommandFrame):
            return Reply(0, self._status, error=NeErrorCode.NOT_RECOGNISED)
        self.framings.append(item.framing)
        command = item.command
        if command.mnemonic is Mnemonic.SAFE_MODE and command.argument:
            self._safe = command.argument != "0"
        if self._alarm is not None:
            alarm, self._alarm = self._alarm, None
            return Reply(command.target_address, alarm=alarm)
        return Reply(command.target_address, self._status, data=self._data(command))

    def _data(self, command: Command) -> str:
        match command.mnemonic:
            case Mnemonic.VERSION:
                return "NE1000V3.928"
            case Mnemonic.DIAMETER:
                return format_display_number(Decimal("26.59"))
            case Mnemonic.RATE if command.argument:
                number, unit = split_rate_argument(command.argument)
                self._rate = (number, unit or self._rate[1])
            case Mnemonic.RATE:
                number, unit = self._rate
                return f"{format_display_number(number)}{unit.value}"
            case Mnemonic.DISPENSED:
                return format_dispensed(Decimal("0.25"), 0, VolumeUnit.ML)
            case Mnemonic.RUN:
                self._status = NeStatus.INFUSING
            case Mnemonic.STOP:
                self._status = NeStatus.STOPPED
            case Mnemonic.SAFE_MODE if not command.argument:
                return "5" if self._safe else "0"
        return ""


@pytest.mark.timeout(10)
def test_nesp_lib_session_sends_the_observed_bytes_and_accepts_our_replies() -> None:
    port = CodecPort()
    pump = nesp_lib.Pump(port)  # SAF0 (safe), A?R, SAF0 again, VER
    assert (pump.model_number, pump.firmware_version) == (1000, (3, 928))
    pump.syringe_diameter_mm = 26.59
    pump.pumping_direction = nesp_lib.PumpingDirection.INFUSE
    pump.pumping_rate_ml_per_min = 28 / 60
    pump.run(wait_while_running=False)
    assert pump.status is nesp_lib.Status.INFUSING
    pump.stop()
    assert port.received == [
        b"\x02\x09" + b"0SAF0" + b"\x59\xad\x03",
        b"\x02\x09" + b"0SAF0" + b"\x59\xad\x03",
        b"0VER\r",
        b"0DIA26.59\r",
        b"0DIRINF\r",
        b"0RAT466.6UM\r",
        b"0RUN\r",
        b"0\r",
        b"0STP\r",
        b"0\r",
    ]


@pytest.mark.timeout(10)
def test_nesp_lib_parses_our_rate_dispensed_and_diameter_replies() -> None:
    pump = nesp_lib.Pump(CodecPort())
    pump.pumping_rate_ml_per_min = 28 / 60
    assert pump.pumping_rate_ml_per_min == pytest.approx(0.4666)
    assert pump.volume_infused_ml == pytest.approx(0.25)
    assert pump.syringe_diameter_mm == pytest.approx(26.59)


@pytest.mark.timeout(10)
def test_nesp_lib_talks_to_our_codec_in_safe_mode_both_ways() -> None:
    port = CodecPort()
    pump = nesp_lib.Pump(port)
    pump.safe_mode_timeout_s = 5  # starts nesp-lib's heartbeat thread
    try:
        assert pump.status is nesp_lib.Status.STOPPED
        assert pump.safe_mode_timeout_s == 5
    finally:
        pump.safe_mode_timeout_s = 0  # stops it
    assert Framing.SAFE in port.framings
    assert port.received[-1] == b"\x02\x09" + b"0SAF0" + b"\x59\xad\x03"
    assert pump.status is nesp_lib.Status.STOPPED


_nesp_pump = nesp_lib.Pump
_encode_basic = _nesp_pump._Pump__command_request_encode_basic
_encode_safe = _nesp_pump._Pump__command_request_encode_safe
_parse_reply = _nesp_pump._Pump__command_reply_parse


@given(commands())
def test_command_bytes_equal_nesp_lib_own_encoding_of_the_same_text(command: Command) -> None:
    assert encode_command(command, Framing.BASIC) == _encode_basic(command.text)
    assert encode_command(command, Framing.SAFE) == _encode_safe(command.text)


@given(replies())
def test_nesp_lib_reply_parser_reads_our_replies(reply: Reply) -> None:
    if reply.error is not None:
        return  # nesp-lib turns error replies into exceptions of its own
    status, alarm, data = _parse_reply(reply.address, reply.payload)
    if reply.alarm is not None:
        assert (
            alarm.name
            == {
                NeAlarm.RESET: "RESET",
                NeAlarm.STALLED: "STALLED",
                NeAlarm.SAFE_TIMEOUT: "TIMEOUT",
                NeAlarm.PROGRAM_ERROR: "ERROR",
                NeAlarm.PHASE_OUT_OF_RANGE: "RANGE",
            }[reply.alarm]
        )
    else:
        assert alarm is None
        assert data == reply.data
        assert status.name is not None
