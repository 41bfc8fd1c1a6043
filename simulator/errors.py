"""The typed errors of the ``simulator`` package: one root, :class:`SimulatorError`.

A transport maps them onto its wire: for NE-1000, :class:`OutOfRangeError` (and so
:class:`RateRefusedError`) is ``?OOR`` and :class:`NotApplicableError` is ``?NA``; for Modbus both
are exception 03 (illegal data value) on the write that caused them.
"""

from __future__ import annotations


class SimulatorError(Exception):
    """Root of every error raised by the ``simulator`` package."""


class OutOfRangeError(SimulatorError, ValueError):
    """A value the simulated pump refuses: outside its own limits, negative, NaN or infinite.

    The message names the value and the allowed range.  Nothing in the model changes.
    """


class RateRefusedError(OutOfRangeError):
    """A rate the pump refuses: above its own maximum, negative, NaN or infinite.

    The model also latches the advisory alarm ``RATE_REFUSED``; state and setpoint are unchanged.
    """


class NotApplicableError(SimulatorError):
    """A valid command that is not applicable now (e.g. start while a stopping alarm is latched).

    Nothing in the model changes.
    """


class InvalidFaultError(SimulatorError, ValueError):
    """A fault that cannot be injected or cleared this way; the message names the ones that can."""


class FaultScriptError(SimulatorError):
    """A fault script that cannot be used: unreadable, malformed, or an entry out of range.

    ``entry_index`` is the index of the offending entry in the script's ``faults`` list (``None``
    when the problem is not in one entry) and ``field`` the offending field name, when known.
    The message names both and the allowed values or range.
    """

    def __init__(self, message: str, *, entry_index: int | None = None, field: str | None = None):
        super().__init__(message)
        self.entry_index = entry_index
        self.field = field
