"""PumpRegisters, the register logic behind ModbusSimulatorServer, without any wire."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.clock import ManualClock
from protocol.modbus import (
    IDENTIFICATION_SPAN,
    REGISTERS,
    SETPOINTS_SPAN,
    STATUS_SPAN,
    U16_MAX,
    WATCHDOG_SPAN,
    CommandCode,
    IllegalDataValueError,
    Reg,
    RequestRefusedError,
    decode_identification,
    decode_status,
    split_u32,
)
from protocol.pump_state import PumpAlarm, PumpState
from simulator.modbus_datastore import PumpRegisters, simulator_identification
from simulator.model import PumpModel

pytestmark = pytest.mark.timeout(60)


def pump() -> tuple[ManualClock, PumpModel, PumpRegisters]:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=100.0)
    return clock, model, PumpRegisters(model)


def test_each_readable_register_reads_the_same_alone_as_in_its_block() -> None:
    clock, model, registers = pump()
    registers.write(Reg.RATE_SETPOINT.address, [*split_u32(1234), *split_u32(56_789)])
    registers.write(Reg.WATCHDOG_TIMEOUT.address, [30, 9])
    registers.write(Reg.COMMAND.address, [int(CommandCode.START)])
    clock.advance(77.0)
    for span in (IDENTIFICATION_SPAN, SETPOINTS_SPAN, WATCHDOG_SPAN, STATUS_SPAN):
        whole = registers.read(span.address, span.count)
        for register in REGISTERS:
            if span.address <= register.address < span.end:
                offset = register.address - span.address
                alone = registers.read(register.address, register.words)
                assert alone == whole[offset : offset + register.words], register.name
    assert decode_identification(
        registers.read(IDENTIFICATION_SPAN.address, IDENTIFICATION_SPAN.count)
    ) == simulator_identification(model)


def test_status_echoes_the_setpoints_and_watchdog() -> None:
    _, _, registers = pump()
    registers.write(Reg.RATE_SETPOINT.address, [*split_u32(1234), *split_u32(56_789)])
    registers.write(Reg.WATCHDOG_TIMEOUT.address, [30, 9])
    block = decode_status(registers.read(STATUS_SPAN.address, STATUS_SPAN.count))
    assert str(block.rate_setpoint_ml_per_h) == "12.34"
    assert str(block.vtbi_ml) == "56.789"
    assert block.watchdog_timeout_s == 30
    assert block.heartbeat_echo == 9
    assert registers.read(Reg.WATCHDOG_TIMEOUT.address, 2) == [30, 9]


def test_a_model_refusal_is_exception_03_naming_the_register() -> None:
    _, model, registers = pump()
    model.inject(PumpAlarm.AIR_IN_LINE)
    with pytest.raises(IllegalDataValueError, match="COMMAND") as caught:
        registers.write(Reg.COMMAND.address, [int(CommandCode.START)])
    assert caught.value.register_name == "COMMAND"
    assert model.snapshot().state is PumpState.ALARM


#: Mapped addresses, their neighbours, and anything else.
_ADDRESSES = st.one_of(
    st.sampled_from(
        sorted({r.address + d for r in REGISTERS for d in (-1, 0, 1) if r.address + d >= 0})
    ),
    st.integers(0, U16_MAX),
)
#: Values near the interesting edges (0, command codes, MAX_RATE in counts), and anything else.
_WORDS = st.one_of(
    st.sampled_from([0, 1, 600, 601, 10_000, 10_001, *(int(code) for code in CommandCode)]),
    st.integers(0, U16_MAX),
)


@given(address=_ADDRESSES, values=st.lists(_WORDS, min_size=1, max_size=6))
def test_a_refused_write_changes_nothing(address: int, values: list[int]) -> None:
    _, model, registers = pump()
    registers.write(Reg.RATE_SETPOINT.address, [*split_u32(500), *split_u32(2000)])
    before = model.snapshot()
    try:
        registers.write(address, values)
    except RequestRefusedError:
        after = model.snapshot()
        alarms = after.alarms - {PumpAlarm.RATE_REFUSED}  # the only trace a refusal may leave
        assert replace(after, alarms=alarms) == before


@given(beats=st.lists(st.integers(0, U16_MAX), min_size=1, max_size=20))
def test_only_changed_heartbeats_feed(beats: list[int]) -> None:
    clock, model, registers = pump()
    registers.write(Reg.WATCHDOG_TIMEOUT.address, [10])
    held = 0
    deadline = 10.0  # the WATCHDOG_TIMEOUT write started the timer at 0
    for beat in beats:
        now = clock.advance(4.0)
        registers.write(Reg.HEARTBEAT.address, [beat])
        expired = PumpAlarm.COMM_TIMEOUT in model.snapshot().alarms
        assert expired == (now >= deadline)
        if expired:
            break
        if beat != held:
            deadline = now + 10.0
        held = beat
