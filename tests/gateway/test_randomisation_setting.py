"""The site setting ``control.require_randomisation_time`` from the configuration to the channel
(docs/dosing.md, rule 5).

``test_controller_rules.py`` checks the rule on :func:`gateway.controller.decide` with the rules
built by hand; here the setting goes the way a site sets it: a configuration, the channel built
from it, the start journalled with its note.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.config import ControlConfig, build_config
from gateway.course_state import ChannelState
from gateway.errors import InputError
from tests.gateway.conftest import STEP_S, Rig


def test_rule_5_a_channel_configured_without_randomisation_time_is_refused_by_default(
    make_rig: Callable[..., Rig],
) -> None:
    with pytest.raises(InputError, match="randomised_at: must be given"):
        make_rig(randomised_at=None)


def test_rule_5_a_site_that_allows_it_starts_and_journals_that_the_rule_was_not_checked(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(randomised_at=None, control=ControlConfig(require_randomisation_time=False))
    rig.run(2 * STEP_S)
    assert rig.channel.state is ChannelState.INFUSING
    (check,) = rig.events("start_check")
    assert check["randomised_at_s"] is None
    assert "not checked" in check["note"]


@pytest.mark.parametrize(
    ("control", "required"), [({}, True), ({"require_randomisation_time": False}, False)]
)
def test_rule_5_the_setting_is_read_from_the_configuration(
    control: dict[str, object], required: bool
) -> None:
    config = build_config(
        {
            "state_dir": "/var/lib/infusion-gateway",
            "control": control,
            "channels": [{"id": "bed1", "pump": "modbus+tcp://127.0.0.1:1"}],
        }
    )
    assert config.control.require_randomisation_time is required
