"""CRC-16/XMODEM, the checksum of NE-1000 safe-mode packets."""

from __future__ import annotations

import binascii


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM of ``data``: poly 0x1021, init 0x0000, no reflection, no xor-out.

    Sent big-endian after the data of a safe-mode packet.  ``crc16_xmodem(b"SAF0") == 0x5543``.
    """
    return binascii.crc_hqx(data, 0)
