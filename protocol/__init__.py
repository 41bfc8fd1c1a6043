"""Pure wire codecs for infusion pumps: frames, checksums, number formats, register maps.

Nothing here does I/O and nothing here imports another package of this project.
Every decoding failure is a :class:`protocol.errors.ProtocolError`, never a crash.
"""

from protocol.errors import ChecksumError, DecodeError, EncodeError, ProtocolError

__all__ = ["ChecksumError", "DecodeError", "EncodeError", "ProtocolError"]
