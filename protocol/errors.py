"""The typed errors of the ``protocol`` package: one root, :class:`ProtocolError`."""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error raised by the ``protocol`` package."""


class DecodeError(ProtocolError):
    """Bytes or registers that do not decode to a valid message."""


class ChecksumError(DecodeError):
    """A frame whose checksum does not match its content."""


class EncodeError(ProtocolError):
    """A value that cannot be represented on the wire (out of range, too many digits, ...)."""
