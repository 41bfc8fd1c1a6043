"""docs/newera.md and the NE-1000 simulator agree: its alarm mapping, defaults and answers."""

from __future__ import annotations

from protocol.clock import ManualClock
from protocol.newera import format_display_number, format_version
from protocol.pump_state import PumpAlarm
from simulator.model import PumpModel
from simulator.newera_session import (
    DEFAULT_DIAMETER_MM,
    DEFAULT_VERSION,
    DIAMETER_MAX_MM,
    DIAMETER_MIN_MM,
    NE_ALARM_FOR,
    NeweraSession,
)
from tests.protocol.test_newera_doc import code, doc_prose, doc_rows, exchange_rows

#: How the mapping table writes a model alarm that has no NE alarm.
NO_NE_ALARM = "none"


def test_alarm_mapping_table_matches_the_session() -> None:
    rows = doc_rows(("Model alarm", "NE alarm"))
    assert len(rows) == len(PumpAlarm)
    documented = {PumpAlarm[name]: code(ne_alarm) for name, ne_alarm in rows}
    assert documented == {
        alarm: NE_ALARM_FOR[alarm].value if alarm in NE_ALARM_FOR else NO_NE_ALARM
        for alarm in PumpAlarm
    }


def test_observed_exchange_is_what_the_simulator_answers_after_power_up() -> None:
    model = PumpModel(ManualClock())
    model.power_loss()  # a pump just powered on: its first reply is A?R
    session = NeweraSession(model)
    for host, command, pump, _payload in exchange_rows():
        assert session.exchange(host) == pump, command


def test_prose_states_the_session_defaults() -> None:
    prose = doc_prose()
    low, high = DIAMETER_MIN_MM, DIAMETER_MAX_MM
    assert f"`DIA` accepts {low}-{high} mm" in prose
    assert f"the diameter is {format_display_number(DEFAULT_DIAMETER_MM)} mm" in prose
    assert f"`VER` answers `{format_version(DEFAULT_VERSION)}`" in prose
