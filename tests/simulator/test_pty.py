"""Pty pairs and the null-modem relay carry bytes both ways, and close cleanly."""

from __future__ import annotations

import os

import pytest
import serial

from simulator.pty import NullModem, PtyPair

pytestmark = pytest.mark.timeout(10)


def test_pty_pair_is_a_raw_serial_device() -> None:
    with PtyPair.open() as pair:
        port = serial.serial_for_url(pair.path, timeout=1.0)
        try:
            port.write(b"0RUN\r\n\x03")
            assert os.read(pair.master_fd, 64) == b"0RUN\r\n\x03"  # raw: no translation
            os.write(pair.master_fd, b"\x0200I\x03")
            assert port.read(5) == b"\x0200I\x03"
        finally:
            port.close()


def test_null_modem_joins_two_device_paths_both_ways() -> None:
    with NullModem() as cable:
        left_path, right_path = cable.paths
        left = serial.serial_for_url(left_path, timeout=2.0)
        right = serial.serial_for_url(right_path, timeout=2.0)
        try:
            left.write(bytes(range(256)))
            assert right.read(256) == bytes(range(256))
            right.write(b"reply")
            assert left.read(5) == b"reply"
        finally:
            left.close()
            right.close()
