"""The typed errors of the ``drivers`` package: one root, :class:`DriverError`."""

from __future__ import annotations


class DriverError(Exception):
    """Root of every error raised by a pump driver."""


class DriverConfigError(DriverError, ValueError):
    """A pump URL or option that cannot be used; the message names the part and allowed values."""


class PumpTimeoutError(DriverError):
    """The pump did not answer within the per-request timeout."""


class LinkLostError(DriverError):
    """The serial port or socket went away; the driver reconnects on the next request."""


class PumpProtocolError(DriverError):
    """The pump answered with bytes that do not decode (garbage, bad CRC, wrong framing)."""


class PumpRefusedError(DriverError):
    """The pump understood the command and refused it (NE-1000 ``?OOR``/``?NA``, Modbus 03)."""


class PumpAlarmError(DriverError):
    """The pump is in an alarm that prevents the command (e.g. start while occluded)."""


class UnsupportedPumpError(DriverError):
    """The pump identified as a model or firmware this driver does not support."""
