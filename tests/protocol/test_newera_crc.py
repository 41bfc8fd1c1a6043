"""Known-answer vectors for the NE-1000 safe-mode checksum (CRC-16/XMODEM)."""

from __future__ import annotations

import pytest

from protocol.newera import crc16_xmodem, encode_safe_packet


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x0000),
        (b"123456789", 0x31C3),  # the catalogue check value of CRC-16/XMODEM
        (b"SAF0", 0x5543),  # docs/newera.md §3
        (b"0SAF0", 0x59AD),  # nesp-lib's first packet, observed on the wire
        (b"A", 0x58E5),
    ],
)
def test_crc16_xmodem_matches_known_answers(data: bytes, expected: int) -> None:
    assert crc16_xmodem(data) == expected


def test_safe_packet_of_saf0_is_the_documented_frame() -> None:
    assert encode_safe_packet(b"SAF0") == bytes.fromhex("02 08 53 41 46 30 55 43 03")


def test_safe_packet_of_nesp_lib_saf0_is_the_observed_frame() -> None:
    assert encode_safe_packet(b"0SAF0") == b"\x02\x09" + b"0SAF0" + b"\x59\xad\x03"


def test_safe_packet_length_byte_counts_itself_crc_and_etx() -> None:
    packet = encode_safe_packet(b"0VER")
    assert packet[1] == len(b"0VER") + 4
    assert len(packet) == packet[1] + 1  # the length covers everything after STX
