"""The pump's Modbus register map: one versioned table, imported by the driver and the simulator.

Every register is a 16-bit *holding* register (read with function 03, written with 06 or 16).
Addresses are zero-based protocol (PDU) addresses as sent on the wire; tools that use Modicon
"4xxxx" numbering show address ``a`` as ``40001 + a``.

Each address is written exactly once, in the :class:`Reg` namespace below; :data:`REGISTERS`,
the block spans and every encoder and decoder derive from it.  Changing any address, width,
scale or meaning requires a new :data:`MAP_VERSION`.  ``docs/modbus-map.md`` documents this
table for integrators, and a test keeps the two identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from protocol.modbus.codes import CommandCode
from protocol.modbus.scaling import RATE_RESOLUTION_ML_PER_H, VOLUME_RESOLUTION_ML
from protocol.modbus.words import U16_MAX, U32_MAX

#: Version of this register map.  It is served at address 0 (Reg.MAP_VERSION), in every version.
MAP_VERSION: Final = 1

#: What the WORD_ORDER_TEST pair holds: it reads 0x1234 then 0x5678 when words are in order.
WORD_ORDER_TEST_VALUE: Final = 0x1234_5678

#: Highest WATCHDOG_TIMEOUT a pump accepts, in seconds.
WATCHDOG_TIMEOUT_MAX_S: Final = 600

_ONE: Final = Decimal(1)


class Access(StrEnum):
    """Who may do what with a register."""

    R = "R"
    RW = "RW"
    W = "W"

    @property
    def readable(self) -> bool:
        """True when function 03 may read the register."""
        return self is not Access.W

    @property
    def writable(self) -> bool:
        """True when functions 06 / 16 may write the register."""
        return self is not Access.R


class WireType(StrEnum):
    """How a register's words are interpreted."""

    U16 = "u16"  # one register, unsigned
    U32 = "u32"  # two registers, unsigned, high word first
    ASCII = "ascii"  # two characters per register, high byte first, NUL-padded


class BlockId(StrEnum):
    """The contiguous register blocks of the map."""

    IDENTIFICATION = "identification"
    SETPOINTS = "setpoints"
    COMMAND = "command"
    WATCHDOG = "watchdog"
    STATUS = "status"


@dataclass(frozen=True)
class Register:
    """One entry of the register map.

    ``scale`` is the engineering value of one count in ``unit`` (``Decimal(1)`` and ``""`` for a
    plain number).  ``minimum``/``maximum`` bound what a write may put in a writable register, in
    counts; ``maximum`` ``None`` means the largest value of the wire type.
    """

    name: str
    address: int
    words: int
    access: Access
    wire_type: WireType
    block: BlockId
    description: str
    scale: Decimal = _ONE
    unit: str = ""
    minimum: int = 0
    maximum: int | None = None

    @property
    def end(self) -> int:
        """The first address after this register."""
        return self.address + self.words

    @property
    def addresses(self) -> range:
        """Every address this register occupies."""
        return range(self.address, self.end)

    @property
    def write_maximum(self) -> int:
        """Largest value a write may put here, in counts (before any pump-specific cap)."""
        if self.maximum is not None:
            return self.maximum
        return U32_MAX if self.wire_type is WireType.U32 else U16_MAX


class Reg:
    """Namespace holding every register of map version :data:`MAP_VERSION`; not instantiated."""

    # --- identification: read once after connecting --------------------------------------------
    MAP_VERSION = Register(
        name="MAP_VERSION",
        address=0,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.IDENTIFICATION,
        description="Register map version (1). Stays at address 0 in every version.",
    )
    VENDOR_ID = Register(
        name="VENDOR_ID",
        address=1,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.IDENTIFICATION,
        description="Vendor number.",
    )
    WORD_ORDER_TEST = Register(
        name="WORD_ORDER_TEST",
        address=2,
        words=2,
        access=Access.R,
        wire_type=WireType.U32,
        block=BlockId.IDENTIFICATION,
        description="Word-order test pattern: reads 0x1234 then 0x5678 (0x12345678).",
    )
    MODEL_ID = Register(
        name="MODEL_ID",
        address=4,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.IDENTIFICATION,
        description="Model number, assigned by the vendor.",
    )
    FIRMWARE_MAJOR = Register(
        name="FIRMWARE_MAJOR",
        address=5,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.IDENTIFICATION,
        description="Firmware version, major part.",
    )
    FIRMWARE_MINOR = Register(
        name="FIRMWARE_MINOR",
        address=6,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.IDENTIFICATION,
        description="Firmware version, minor part.",
    )
    FIRMWARE_PATCH = Register(
        name="FIRMWARE_PATCH",
        address=7,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.IDENTIFICATION,
        description="Firmware version, patch part.",
    )
    MAX_RATE = Register(
        name="MAX_RATE",
        address=8,
        words=2,
        access=Access.R,
        wire_type=WireType.U32,
        block=BlockId.IDENTIFICATION,
        description="Highest RATE_SETPOINT this pump accepts (at least 1 count).",
        scale=RATE_RESOLUTION_ML_PER_H,
        unit="mL/h",
    )
    MODEL_NAME = Register(
        name="MODEL_NAME",
        address=10,
        words=8,
        access=Access.R,
        wire_type=WireType.ASCII,
        block=BlockId.IDENTIFICATION,
        description="Model name, up to 16 printable ASCII characters, NUL-padded.",
    )
    SERIAL_NUMBER = Register(
        name="SERIAL_NUMBER",
        address=18,
        words=8,
        access=Access.R,
        wire_type=WireType.ASCII,
        block=BlockId.IDENTIFICATION,
        description="Serial number, up to 16 printable ASCII characters, NUL-padded.",
    )

    # --- setpoints: written together with function 16 or one at a time --------------------------
    RATE_SETPOINT = Register(
        name="RATE_SETPOINT",
        address=100,
        words=2,
        access=Access.RW,
        wire_type=WireType.U32,
        block=BlockId.SETPOINTS,
        description="Rate setpoint; applies at once, also while infusing. 0 = not set.",
        scale=RATE_RESOLUTION_ML_PER_H,
        unit="mL/h",
    )
    VTBI = Register(
        name="VTBI",
        address=102,
        words=2,
        access=Access.RW,
        wire_type=WireType.U32,
        block=BlockId.SETPOINTS,
        description="Volume to be infused; 0 = continuous. A write reloads VTBI_REMAINING.",
        scale=VOLUME_RESOLUTION_ML,
        unit="mL",
    )

    # --- command ---------------------------------------------------------------------------------
    COMMAND = Register(
        name="COMMAND",
        address=200,
        words=1,
        access=Access.W,
        wire_type=WireType.U16,
        block=BlockId.COMMAND,
        description="Command code (see Command codes). Any other value is refused.",
        minimum=min(CommandCode),
        maximum=max(CommandCode),
    )

    # --- watchdog --------------------------------------------------------------------------------
    WATCHDOG_TIMEOUT = Register(
        name="WATCHDOG_TIMEOUT",
        address=300,
        words=1,
        access=Access.RW,
        wire_type=WireType.U16,
        block=BlockId.WATCHDOG,
        description="Bus watchdog timeout; 0 = off. A write restarts the watchdog timer.",
        unit="s",
        maximum=WATCHDOG_TIMEOUT_MAX_S,
    )
    HEARTBEAT = Register(
        name="HEARTBEAT",
        address=301,
        words=1,
        access=Access.RW,
        wire_type=WireType.U16,
        block=BlockId.WATCHDOG,
        description="Heartbeat: a write of a value other than the last one feeds the watchdog.",
    )

    # --- status: one read of the whole block is one poll ----------------------------------------
    STATE = Register(
        name="STATE",
        address=400,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.STATUS,
        description="Pump state (see State values).",
    )
    WATCHDOG_TIMEOUT_ECHO = Register(
        name="WATCHDOG_TIMEOUT_ECHO",
        address=401,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.STATUS,
        description="WATCHDOG_TIMEOUT in force; 0 = off.",
        unit="s",
    )
    ALARMS = Register(
        name="ALARMS",
        address=402,
        words=2,
        access=Access.R,
        wire_type=WireType.U32,
        block=BlockId.STATUS,
        description="Alarm bit field (see Alarm bits).",
    )
    RATE_SETPOINT_ECHO = Register(
        name="RATE_SETPOINT_ECHO",
        address=404,
        words=2,
        access=Access.R,
        wire_type=WireType.U32,
        block=BlockId.STATUS,
        description="RATE_SETPOINT in force; 0 = not set.",
        scale=RATE_RESOLUTION_ML_PER_H,
        unit="mL/h",
    )
    MEASURED_RATE = Register(
        name="MEASURED_RATE",
        address=406,
        words=2,
        access=Access.R,
        wire_type=WireType.U32,
        block=BlockId.STATUS,
        description="Rate the pump is delivering now; 0 unless INFUSING.",
        scale=RATE_RESOLUTION_ML_PER_H,
        unit="mL/h",
    )
    VTBI_ECHO = Register(
        name="VTBI_ECHO",
        address=408,
        words=2,
        access=Access.R,
        wire_type=WireType.U32,
        block=BlockId.STATUS,
        description="VTBI in force; 0 = continuous.",
        scale=VOLUME_RESOLUTION_ML,
        unit="mL",
    )
    VTBI_REMAINING = Register(
        name="VTBI_REMAINING",
        address=410,
        words=2,
        access=Access.R,
        wire_type=WireType.U32,
        block=BlockId.STATUS,
        description="Volume still to infuse before the pump stops; 0 when continuous.",
        scale=VOLUME_RESOLUTION_ML,
        unit="mL",
    )
    VOLUME_INFUSED = Register(
        name="VOLUME_INFUSED",
        address=412,
        words=2,
        access=Access.R,
        wire_type=WireType.U32,
        block=BlockId.STATUS,
        description="Volume infused since the last CLEAR_TOTALS.",
        scale=VOLUME_RESOLUTION_ML,
        unit="mL",
    )
    UPTIME = Register(
        name="UPTIME",
        address=414,
        words=2,
        access=Access.R,
        wire_type=WireType.U32,
        block=BlockId.STATUS,
        description="Time since power-up; wraps at 2^32. Not advancing means stale data.",
        unit="s",
    )
    HEARTBEAT_ECHO = Register(
        name="HEARTBEAT_ECHO",
        address=416,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.STATUS,
        description="Last value written to HEARTBEAT.",
    )
    LAST_COMMAND = Register(
        name="LAST_COMMAND",
        address=417,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.STATUS,
        description="Code of the last accepted command; 0 = none yet.",
    )
    COMMAND_COUNTER = Register(
        name="COMMAND_COUNTER",
        address=418,
        words=1,
        access=Access.R,
        wire_type=WireType.U16,
        block=BlockId.STATUS,
        description="Count of accepted commands, modulo 65536.",
    )


#: The register map, sorted by address: the one table both the driver and the simulator use.
REGISTERS: Final[tuple[Register, ...]] = tuple(
    sorted(
        (value for value in vars(Reg).values() if isinstance(value, Register)),
        key=lambda register: register.address,
    )
)

#: Every register by its name.
REGISTER_BY_NAME: Final[Mapping[str, Register]] = MappingProxyType(
    {register.name: register for register in REGISTERS}
)

_REGISTER_BY_ADDRESS: Final[Mapping[int, Register]] = MappingProxyType(
    {address: register for register in REGISTERS for address in register.addresses}
)


def register_at(address: int) -> Register | None:
    """Return the register occupying ``address`` (any of its words), or ``None`` if unmapped."""
    return _REGISTER_BY_ADDRESS.get(address)


@dataclass(frozen=True)
class Span:
    """A run of consecutive registers: ``count`` registers starting at ``address``."""

    address: int
    count: int

    @property
    def end(self) -> int:
        """The first address after the span."""
        return self.address + self.count


def block_registers(block: BlockId) -> tuple[Register, ...]:
    """The registers of ``block``, sorted by address."""
    return tuple(register for register in REGISTERS if register.block is block)


def block_span(block: BlockId) -> Span:
    """The span from the first to the last register of ``block`` (blocks have no gaps)."""
    registers = block_registers(block)
    return Span(address=registers[0].address, count=registers[-1].end - registers[0].address)


#: One read of this span returns the whole identification block.
IDENTIFICATION_SPAN: Final = block_span(BlockId.IDENTIFICATION)
#: RATE_SETPOINT and VTBI; one function-16 write of this span sets both at once.
SETPOINTS_SPAN: Final = block_span(BlockId.SETPOINTS)
#: The COMMAND register.
COMMAND_SPAN: Final = block_span(BlockId.COMMAND)
#: WATCHDOG_TIMEOUT and HEARTBEAT.
WATCHDOG_SPAN: Final = block_span(BlockId.WATCHDOG)
#: One read of this span is one poll.
STATUS_SPAN: Final = block_span(BlockId.STATUS)
