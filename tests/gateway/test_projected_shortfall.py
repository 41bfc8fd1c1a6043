"""A day that cannot be given in its window says so when the day starts (docs/dosing.md, rule 4).

Planning uses the lower of the ceiling (with a site's lower setting) and the pump's own maximum.
When the day's volume does not fit under that rate, the advisory ``projected_shortfall`` is
raised as soon as it is known, the pump keeps infusing at the usable rate, and never a rate the
safety check must refuse.  ``test_channel_faults.py`` holds the case where an occlusion makes the
day too short; here the day is too short from its first minute.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.cli.client import render_status
from gateway.course_state import AlarmCode, ChannelState
from gateway.planner import DAY_S
from tests.gateway.conftest import STEP_S, Rig


@pytest.mark.hazard("H-UN-01")
def test_rule_4_a_site_ceiling_too_low_for_the_day_is_alarmed_at_the_start(
    make_rig: Callable[..., Rig],
) -> None:
    # docs/dosing.md, rule 4's example: 70 kg, flat, site ceiling 0.2 mL/kg/h = 14 mL/h; 350 mL
    # over 24 h needs 14.58 mL/h, so 24 x 14 = 336 mL is all the day can give: 14 mL short.
    rig = make_rig(arm="flat", weight_kg=70.0, ceiling_ml_per_kg_per_h=0.2)
    rig.run(STEP_S)
    snap = rig.channel.snapshot()
    assert snap["state"] == ChannelState.INFUSING.value
    assert snap["ceiling_ml_per_h"] == pytest.approx(14.0)
    assert snap["commanded_rate_ml_per_h"] == pytest.approx(14.0)
    (alarm,) = snap["alarms"]
    assert alarm["code"] == AlarmCode.PROJECTED_SHORTFALL.value
    assert alarm["stops"] is False
    assert alarm["detail"].startswith("day 1: ")
    assert alarm["detail"].endswith(" mL cannot be given by the window's end at 14.00 mL/h")
    # 350 mL less the upper bound of what was given (one 0.001-mL step) less 24 h x 14 mL/h.
    assert snap["days"][0]["projected_shortfall_ml"] == pytest.approx(13.999)
    text = render_status({"channels": [snap]})
    assert "projected short 13.99 mL" in text  # rounded down, as every number status shows
    assert "ADVISORY projected_shortfall: day 1: " in text
    rig.run(DAY_S)
    day1 = rig.journal.days("bed1")[0]
    assert day1.closed
    assert day1.delivered_ml == pytest.approx(336.0, rel=0.005)
    assert day1.shortfall_ml == pytest.approx(14.0, abs=2.0)
    assert max(rig.driver.sent) <= 14.0
    assert not rig.events("command_refused")


@pytest.mark.hazard("H-UN-01")
def test_rule_4_a_pump_whose_maximum_is_below_the_day_plans_at_its_maximum_from_the_start(
    make_rig: Callable[..., Rig],
) -> None:
    # 140 kg, flat: 700 mL a day needs 29.17 mL/h (ceiling 56 mL/h); the pump gives 20 at most.
    rig = make_rig(arm="flat", weight_kg=140.0, max_rate_ml_per_h=20.0)
    rig.run(STEP_S)
    snap = rig.channel.snapshot()
    assert snap["state"] == ChannelState.INFUSING.value
    assert snap["commanded_rate_ml_per_h"] == pytest.approx(20.0)
    assert [a["code"] for a in snap["alarms"]] == [AlarmCode.PROJECTED_SHORTFALL.value]
    assert snap["days"][0]["projected_shortfall_ml"] == pytest.approx(700.0 - 480.0, abs=0.5)
    rig.run(DAY_S)
    assert max(rig.driver.sent) <= 20.0
    assert not rig.events("command_refused")
    assert rig.journal.days("bed1")[0].delivered_ml == pytest.approx(480.0, rel=0.005)
