"""Who speaks this Modbus profile: vendor and model ids, one home for both ends.

The driver refuses a pump whose ``(VENDOR_ID, MODEL_ID)`` is not listed here; the software pump
identifies itself with the project's own entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

#: VENDOR_ID of the infusion-gateway project: 0x4947, ASCII "IG".
PROJECT_VENDOR_ID: Final = 0x4947
#: MODEL_ID of the project's software pump.
SOFTWARE_PUMP_MODEL_ID: Final = 0x0001

#: Pumps known to implement this profile: ``(VENDOR_ID, MODEL_ID)`` -> vendor name.
KNOWN_PUMPS: Final[Mapping[tuple[int, int], str]] = MappingProxyType(
    {(PROJECT_VENDOR_ID, SOFTWARE_PUMP_MODEL_ID): "infusion-gateway"}
)
