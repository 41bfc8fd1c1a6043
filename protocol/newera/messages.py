"""Typed NE-1000 messages and their text, independent of framing.

* :class:`Command`, host → pump: ``[address]<mnemonic><argument>`` (:attr:`Command.text`);
  :func:`parse_command_text` reads it as a pump does (strips spaces and control characters,
  upper-cases, one or two address digits, a missing address is 0).
* :class:`Reply`, pump → host: ``<address, 2 digits><status char>[data]``, or an alarm in place of
  status and data (``00A?R``), or an error as data (``00S?OOR``) (:attr:`Reply.payload`);
  :func:`parse_reply_payload` reads it.

Framing (CR, STX/ETX, safe-mode length and CRC) is :mod:`protocol.newera.framing`'s business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.newera.constants import (
    ADDRESS_MAX,
    ADDRESS_MIN,
    ALARM_PREFIX,
    DEFAULT_ADDRESS,
    ERROR_PREFIX,
    MAX_ADDRESS_DIGITS,
    MAX_COMMAND_TEXT_LENGTH,
    MAX_REPLY_PAYLOAD_LENGTH,
    MIN_REPLY_PAYLOAD_LENGTH,
    REPLY_ADDRESS_DIGITS,
    Mnemonic,
    NeAlarm,
    NeErrorCode,
    NeStatus,
)
from protocol.newera.errors import MessageValueError, PayloadError, UnknownCommandError
from protocol.pump_state import PumpAlarm

#: Characters a command argument may hold: what survives the pump's clean-up unchanged
#: (printable ASCII without space and without lower-case letters).
COMMAND_ARGUMENT_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset(
    "abcdefghijklmnopqrstuvwxyz"
)
#: Characters the data of a reply may hold: printable ASCII (no STX/ETX, which delimit it).
REPLY_DATA_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F))

_DIGITS = frozenset("0123456789")
#: Status characters and their members (a dict lookup is cheaper than ``NeStatus(char)``).
_STATUS_BY_CHAR = {status.value: status for status in NeStatus}
#: Non-empty mnemonics by their text.
_MNEMONIC_BY_TEXT = {m.value: m for m in Mnemonic if m.value}
#: The lengths of the non-empty mnemonics, longest first, so that matching a command text takes
#: the longest one (two mnemonics of one length cannot both start a text).
_MNEMONIC_LENGTHS_LONGEST_FIRST = tuple(
    sorted({len(text) for text in _MNEMONIC_BY_TEXT}, reverse=True)
)


def _charset_re(chars: frozenset[str]) -> re.Pattern[str]:
    """A pattern that fully matches the strings made only of ``chars`` (the same test as
    ``not set(text) - chars``, done in C)."""
    return re.compile("[" + re.escape("".join(sorted(chars))) + "]*")


_COMMAND_ARGUMENT_RE = _charset_re(COMMAND_ARGUMENT_CHARS)
_REPLY_DATA_RE = _charset_re(REPLY_DATA_CHARS)
#: A reply payload of printable bytes only (the bytes of :data:`REPLY_DATA_CHARS`).
_REPLY_PAYLOAD_BYTES_RE = re.compile(_REPLY_DATA_RE.pattern.encode("ascii"))
#: What a pump strips from a received command: spaces and control characters.
_STRIPPED_COMMAND_BYTES = bytes(range(0x21)) + b"\x7f"


def _check_address(address: object) -> None:
    if (
        isinstance(address, bool)
        or not isinstance(address, int)
        or not ADDRESS_MIN <= address <= ADDRESS_MAX
    ):
        raise MessageValueError(f"address must be an int {ADDRESS_MIN}-{ADDRESS_MAX}: {address!r}")


def _match_mnemonic(rest: str) -> Mnemonic | None:
    """The mnemonic ``rest`` (command text after the address) starts with, longest first."""
    if not rest:
        return Mnemonic.STATUS
    for length in _MNEMONIC_LENGTHS_LONGEST_FIRST:
        mnemonic = _MNEMONIC_BY_TEXT.get(rest[:length])
        if mnemonic is not None:
            return mnemonic
    return None


@dataclass(frozen=True)
class Command:
    """A command from host to pump.

    :ivar mnemonic: what to do; :attr:`Mnemonic.STATUS` (empty) is a status query.
    :ivar argument: the text after the mnemonic (``"466.6UM"`` for ``RAT``); empty for a query.
        Only characters the pump keeps as they are (printable ASCII, no space, no lower case).
    :ivar address: pump address 0-99, or ``None`` to send no address digits (the pump then
        takes it as 0).  Decoded commands always carry an int.
    """

    mnemonic: Mnemonic
    argument: str = ""
    address: int | None = None

    def __post_init__(self) -> None:
        if type(self.mnemonic) is not Mnemonic:  # a member passes as it is: Mnemonic(m) is m
            try:
                object.__setattr__(self, "mnemonic", Mnemonic(self.mnemonic))
            except ValueError:
                raise MessageValueError(f"unknown mnemonic: {self.mnemonic!r}") from None
        if self.address is not None:
            _check_address(self.address)
        if not isinstance(self.argument, str):
            raise MessageValueError(f"argument must be a str: {self.argument!r}")
        if _COMMAND_ARGUMENT_RE.fullmatch(self.argument) is None:
            bad = set(self.argument) - COMMAND_ARGUMENT_CHARS
            raise MessageValueError(
                f"argument holds characters the pump would strip or change: {sorted(bad)!r}"
            )
        mnemonic_text = self.mnemonic.value
        if _match_mnemonic(mnemonic_text + self.argument) is not self.mnemonic:
            raise MessageValueError(
                f"{mnemonic_text!r} + {self.argument!r} reads back as another command"
            )
        if len(self.text) > MAX_COMMAND_TEXT_LENGTH:
            raise MessageValueError(f"command text longer than {MAX_COMMAND_TEXT_LENGTH}")

    @property
    def target_address(self) -> int:
        """The address the pump takes this command for (0 when none is sent)."""
        return DEFAULT_ADDRESS if self.address is None else self.address

    @property
    def text(self) -> str:
        """The command as sent, without framing: ``"0RAT466.6UM"``."""
        address = "" if self.address is None else str(self.address)
        return f"{address}{self.mnemonic.value}{self.argument}"


def normalize_command_bytes(data: bytes) -> bytes:
    """What a pump keeps of a received command: spaces and control characters (0x00-0x20, 0x7F)
    removed, ASCII letters upper-cased.  Bytes 0x80-0xFF are kept (and make it unrecognised)."""
    return bytes(data).translate(None, _STRIPPED_COMMAND_BYTES).upper()


def parse_command_text(data: bytes) -> Command:
    """Read a command's text (no CR, no safe-mode framing) as a pump does.

    :returns: the command, with ``address`` set (0 when the text has no address digits).
    :raises UnknownCommandError: no known mnemonic follows the address, or a non-ASCII byte;
        its ``address`` is set when the text starts with one.
    """
    text = normalize_command_bytes(data).decode("latin-1")
    address_digits = ""
    for char in text[:MAX_ADDRESS_DIGITS]:
        if char not in _DIGITS:
            break
        address_digits += char
    address = int(address_digits) if address_digits else DEFAULT_ADDRESS
    rest = text[len(address_digits) :]
    mnemonic = _match_mnemonic(rest) if rest.isascii() else None
    if mnemonic is None:
        raise UnknownCommandError(f"command not recognised: {text!r}", raw=data, address=address)
    try:
        return Command(mnemonic, rest[len(mnemonic.value) :], address)
    except MessageValueError as error:
        raise UnknownCommandError(str(error), raw=data, address=address) from None


@dataclass(frozen=True)
class Reply:
    """A reply from pump to host.

    Exactly one of :attr:`status` and :attr:`alarm` is set: an alarm reply (``00A?R``) carries
    the alarm in place of the status character and has no data.

    :ivar address: replying pump's address, 0-99 (sent as two digits).
    :ivar status: the pump's status character.
    :ivar alarm: the alarm this reply reports.
    :ivar error: the error the pump reports about the command (the data is then the error).
    :ivar data: the reply data (``"NE1000V3.928"``, ``"466.6UM"``): printable ASCII, not starting
        with ``?`` (that is an :attr:`error`).
    """

    address: int
    status: NeStatus | None = None
    alarm: NeAlarm | None = None
    error: NeErrorCode | None = None
    data: str = ""

    def __post_init__(self) -> None:
        _check_address(self.address)
        # A member passes as it is (``NeStatus(s) is s``); anything else is looked up.
        try:
            if self.status is not None and type(self.status) is not NeStatus:
                object.__setattr__(self, "status", NeStatus(self.status))
            if self.alarm is not None and type(self.alarm) is not NeAlarm:
                object.__setattr__(self, "alarm", NeAlarm(self.alarm))
            if self.error is not None and type(self.error) is not NeErrorCode:
                object.__setattr__(self, "error", NeErrorCode(self.error))
        except ValueError as error:
            raise MessageValueError(str(error)) from None
        if (self.status is None) == (self.alarm is None):
            raise MessageValueError("a reply has a status or an alarm, exactly one of them")
        if self.alarm is not None and (self.error is not None or self.data):
            raise MessageValueError("an alarm reply carries neither error nor data")
        if self.error is not None and self.data:
            raise MessageValueError("an error reply carries no other data")
        if not isinstance(self.data, str):
            raise MessageValueError(f"data must be a str: {self.data!r}")
        if _REPLY_DATA_RE.fullmatch(self.data) is None:
            bad = set(self.data) - REPLY_DATA_CHARS
            raise MessageValueError(f"data holds non-printable characters: {sorted(bad)!r}")
        if self.data.startswith(ERROR_PREFIX):
            raise MessageValueError(
                f"data starting with {ERROR_PREFIX!r} is an error: {self.data!r}"
            )
        # len(self.payload), without building it: the address is two digits (checked above).
        if self.alarm is not None:
            length = REPLY_ADDRESS_DIGITS + len(self.alarm.value)
        else:
            tail = self.error.value if self.error is not None else self.data
            length = REPLY_ADDRESS_DIGITS + 1 + len(tail)
        if length > MAX_REPLY_PAYLOAD_LENGTH:
            raise MessageValueError(f"reply payload longer than {MAX_REPLY_PAYLOAD_LENGTH}")

    @property
    def payload(self) -> str:
        """The reply without framing: ``"00SNE1000V3.928"``, ``"00A?R"``, ``"00S?OOR"``."""
        address = str(self.address).zfill(REPLY_ADDRESS_DIGITS)
        if self.alarm is not None:
            return f"{address}{self.alarm.value}"
        assert self.status is not None  # enforced by __post_init__
        tail = self.error.value if self.error is not None else self.data
        return f"{address}{self.status.value}{tail}"

    @property
    def pump_alarm(self) -> PumpAlarm | None:
        """The protocol-neutral alarm this reply reports, if any."""
        return None if self.alarm is None else self.alarm.pump_alarm


def parse_reply_payload(payload: bytes) -> Reply:
    """Read a reply's payload (the bytes between the framing).

    :raises PayloadError: wrong length, a non-printable byte, address not two digits, unknown
        status character, alarm or error.  ``address`` is set when it could be read.
    """
    if not MIN_REPLY_PAYLOAD_LENGTH <= len(payload) <= MAX_REPLY_PAYLOAD_LENGTH:
        raise PayloadError(f"reply payload of {len(payload)} bytes", raw=payload)
    if _REPLY_PAYLOAD_BYTES_RE.fullmatch(payload) is None:
        raise PayloadError("reply payload holds a non-printable byte", raw=payload)
    text = payload.decode("ascii")
    address_text = text[:REPLY_ADDRESS_DIGITS]
    if not set(address_text) <= _DIGITS:
        raise PayloadError(f"reply address is not two digits: {address_text!r}", raw=payload)
    address = int(address_text)
    rest = text[REPLY_ADDRESS_DIGITS:]
    try:
        if rest.startswith(ALARM_PREFIX):
            return Reply(address, alarm=NeAlarm(rest))
        status = _STATUS_BY_CHAR.get(rest[0])
        if status is None:
            status = NeStatus(rest[0])  # not a status: raises the ValueError caught below
        data = rest[1:]
        if data.startswith(ERROR_PREFIX):
            return Reply(address, status, error=NeErrorCode(data))
        return Reply(address, status, data=data)
    except (ValueError, MessageValueError) as error:
        raise PayloadError(f"reply not understood: {text!r}", raw=payload, address=address) from (
            error
        )
