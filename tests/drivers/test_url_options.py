"""Pump URL options: the URL wins over defaults, every value is checked, one device one key.

``make_pump`` only builds a driver (``__init__`` parses and validates, it opens nothing), so none
of these tests touches a port or a socket; ``device_key`` only resolves names.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import make_pump, open_pump
from drivers.errors import DriverConfigError
from drivers.modbus import ModbusDriver, ModbusOptions
from drivers.newera import NeweraDriver, NeweraOptions
from drivers.url import device_key, duplicate_devices, same_device

DAEMON_DEFAULTS = {"timeout_s": 1.0, "retries": 1}


@pytest.fixture(autouse=True)
def _no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a driver must not connect: fail loudly if it tries."""

    def refuse(self: object) -> None:
        raise AssertionError("make_pump connected")

    monkeypatch.setattr(NeweraDriver, "_connect", refuse)
    monkeypatch.setattr(ModbusDriver, "_connect", refuse)


# -- precedence --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    ["newera:///dev/ttyUSB0", "newera+tcp://127.0.0.1:4001", "modbus+tcp://127.0.0.1:5020"],
)
def test_url_options_win_over_defaults(base: str) -> None:
    driver = make_pump(f"{base}?timeout_s=5&retries=0", defaults=DAEMON_DEFAULTS)
    assert (driver.options.timeout_s, driver.options.retries) == (5.0, 0)
    assert not driver.connected


def test_defaults_fill_what_the_url_leaves_out() -> None:
    driver = make_pump("newera:///dev/ttyUSB0?retries=0", defaults={"timeout_s": 2.5, "retries": 4})
    assert (driver.options.timeout_s, driver.options.retries) == (2.5, 0)
    plain = make_pump("newera:///dev/ttyUSB0")
    assert (plain.options.timeout_s, plain.options.retries) == (1.0, 2)  # the model's own


def test_keyword_overrides_win_over_the_url() -> None:
    driver = make_pump(
        "newera:///dev/ttyUSB0?timeout_s=5&retries=0&address=3",
        defaults=DAEMON_DEFAULTS,
        timeout_s=0.2,
        retries=3,
    )
    options = driver.options
    assert isinstance(options, NeweraOptions)
    assert (options.timeout_s, options.retries, options.address) == (0.2, 3, 3)


def test_defaults_are_validated_too() -> None:
    with pytest.raises(DriverConfigError, match="'retries'"):
        make_pump("newera:///dev/ttyUSB0", defaults={"retries": 9})
    # ...but a default the URL replaces is never looked at
    driver = make_pump("newera:///dev/ttyUSB0?retries=1", defaults={"retries": 9})
    assert driver.options.retries == 1


def test_modbus_tcp_defaults_do_not_count_as_given() -> None:
    driver = make_pump("modbus+tcp://127.0.0.1:5020?unit=7", defaults=DAEMON_DEFAULTS)
    options = driver.options
    assert isinstance(options, ModbusOptions)
    assert (options.unit, options.timeout_s, options.retries) == (7, 1.0, 1)


def test_open_pump_takes_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[float, int]] = []

    def fake_open(self: NeweraDriver) -> None:
        seen.append((self.options.timeout_s, self.options.retries))

    monkeypatch.setattr(NeweraDriver, "open", fake_open)
    open_pump("newera:///dev/ttyUSB0?timeout_s=5", defaults=DAEMON_DEFAULTS).close()
    assert seen == [(5.0, 1)]


# -- every value checked -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name", "allowed"),
    [
        ("timeout_s=nan", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=NaN", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=inf", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=-inf", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=1e999", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=-1", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=0", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=31", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=true", "timeout_s", "> 0 and <= 30"),
        ("timeout_s=1_0", "timeout_s", "> 0 and <= 30"),
        ("retries=1.5", "retries", "from 0 to 5"),
        ("retries=1.0", "retries", "from 0 to 5"),
        ("retries=true", "retries", "from 0 to 5"),
        ("retries=", "retries", "from 0 to 5"),
        ("retries=-1", "retries", "from 0 to 5"),
        ("retries=6", "retries", "from 0 to 5"),
        ("retries=nan", "retries", "from 0 to 5"),
        ("retries=" + "9" * 5000, "retries", "from 0 to 5"),
        ("address=1.5", "address", "from 0 to 99"),
        ("address=100", "address", "from 0 to 99"),
        ("safe_timeout_s=nan", "safe_timeout_s", "from 0 to 255"),
        ("safe_timeout_s=true", "safe_timeout_s", "from 0 to 255"),
        ("baud=19200.0", "baud", "whole number"),
        ("baud=true", "baud", "whole number"),
        ("baud=19201", "baud", "one of 300, 1200"),
    ],
)
def test_bad_newera_values_refused_naming_the_parameter(
    query: str, name: str, allowed: str
) -> None:
    with pytest.raises(DriverConfigError) as caught:
        make_pump(f"newera:///dev/ttyUSB0?{query}")
    message = str(caught.value)
    assert f"pump URL parameter '{name}'" in message
    assert allowed in message
    assert "\n" not in message
    assert len(message) < 300


@pytest.mark.parametrize(
    ("query", "name", "allowed"),
    [
        ("unit=0", "unit", "from 1 to 247"),
        ("unit=1.5", "unit", "from 1 to 247"),
        ("unit=true", "unit", "from 1 to 247"),
        ("unit=", "unit", "from 1 to 247"),
        ("baud=nan", "baud", "whole number"),
        ("parity=X", "parity", "one of N, E, O"),
        ("timeout_s=inf", "timeout_s", "> 0 and <= 30"),
    ],
)
def test_bad_modbus_values_refused_naming_the_parameter(
    query: str, name: str, allowed: str
) -> None:
    with pytest.raises(DriverConfigError, match=f"'{name}'.*{allowed}"):
        make_pump(f"modbus+rtu:///dev/ttyUSB0?{query}")


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
        ({"timeout_s": 10**400}, "timeout_s"),
        ({"retries": 1.5}, "retries"),
        ({"retries": 1.0}, "retries"),
        ({"retries": True}, "retries"),
        ({"retries": -1}, "retries"),
        ({"address": False}, "address"),
        ({"safe_timeout_s": float("nan")}, "safe_timeout_s"),
    ],
)
def test_bad_keyword_values_refused(options: dict[str, Any], name: str) -> None:
    with pytest.raises(DriverConfigError, match=f"'{name}'"):
        make_pump("newera:///dev/ttyUSB0", **options)
    with pytest.raises(DriverConfigError, match=f"'{name}'"):
        make_pump("newera:///dev/ttyUSB0", defaults=options)


def test_good_values_accepted() -> None:
    driver = make_pump("newera:///dev/ttyUSB0?timeout_s=.5&retries=5&address=99&safe_timeout_s=0")
    options = driver.options
    assert isinstance(options, NeweraOptions)
    assert (options.timeout_s, options.retries, options.address) == (0.5, 5, 99)
    assert make_pump("newera:///dev/ttyUSB0", timeout_s=2).options.timeout_s == 2.0


_PARAM_NAMES = st.sampled_from(
    ["timeout_s", "retries", "address", "baud", "safe_timeout_s", "unit", "parity", "x", ""]
)
_VALUES = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"[+-]?[0-9]{0,6}(\.[0-9]{0,4})?(e[+-]?[0-9]{1,4})?", fullmatch=True),
    st.sampled_from(["nan", "inf", "-inf", "true", "1_0", "0x1", "\u0661", "%00", "%ff"]),
)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(
        [
            "newera:///dev/ttyUSB0",
            "newera+tcp://127.0.0.1:4001",
            "modbus+tcp://127.0.0.1:5020",
            "modbus+rtu:///dev/ttyUSB1",
        ]
    ),
    pairs=st.lists(st.tuples(_PARAM_NAMES, _VALUES), max_size=4),
    raw=st.text(max_size=20),
)
def test_any_query_builds_a_driver_or_says_why(
    base: str, pairs: list[tuple[str, str]], raw: str
) -> None:
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    for text in (query, raw, query + "&" + raw):
        message = ""
        try:
            driver = make_pump(f"{base}?{text}", defaults=DAEMON_DEFAULTS)
        except DriverConfigError as exc:
            message = str(exc)
        else:
            assert 0.0 < driver.options.timeout_s <= 30.0
            assert type(driver.options.retries) is int
            assert not driver.connected
            continue
        assert message
        assert "\n" not in message


# -- device identity -----------------------------------------------------------------------


def test_symlink_and_its_target_are_one_device(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB0"
    port.touch()
    by_id = tmp_path / "usb-FTDI_FT232R-if00-port0"
    by_id.symlink_to(port)
    other = tmp_path / "ttyUSB1"
    other.touch()
    assert device_key(f"newera://{by_id}") == device_key(f"newera://{port}")
    assert device_key(f"newera://{port}")[:2] == ("serial", str(port.resolve()))
    assert device_key(f"newera://{port}") != device_key(f"newera://{other}")
    urls = [f"newera://{port}", f"newera://{other}", f"newera://{by_id}?baud=9600"]
    assert duplicate_devices(urls) == [(urls[0], urls[2])]


def test_serial_bus_addresses_are_different_devices(tmp_path: Path) -> None:
    line = tmp_path / "ttyUSB0"
    line.touch()
    one, two = f"modbus+rtu://{line}?unit=1", f"modbus+rtu://{line}?unit=2"
    assert duplicate_devices([one, two]) == []
    # the default unit is 1, spelled or not
    assert duplicate_devices([one, f"modbus+rtu://{line}", f"modbus+rtu://{line}?unit=01"]) == [
        (one, f"modbus+rtu://{line}"),
        (one, f"modbus+rtu://{line}?unit=01"),
        (f"modbus+rtu://{line}", f"modbus+rtu://{line}?unit=01"),
    ]
    assert duplicate_devices([f"newera://{line}", f"newera://{line}?address=1"]) == []


def test_localhost_and_loopback_are_one_device() -> None:
    a, b = "modbus+tcp://localhost:5020", "modbus+tcp://127.0.0.1:5020?unit=1"
    assert duplicate_devices([a, b]) == [(a, b)]
    key = device_key(b)
    assert key == ("tcp", "5020", "modbus.unit=1", "127.0.0.1")
    assert same_device(device_key(a), key)


@pytest.mark.parametrize(
    "other",
    [
        "modbus+tcp://127.0.0.1:5021",
        "modbus+tcp://127.0.0.1:5020?unit=2",
        "modbus+tcp://127.0.0.2:5020",
        "newera+tcp://127.0.0.1:5020",
    ],
)
def test_different_port_unit_or_host_is_another_device(other: str) -> None:
    assert duplicate_devices(["modbus+tcp://localhost:5020", other]) == []


def test_shared_address_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost`` resolving to both ::1 and 127.0.0.1 collides with either."""
    real = socket.getaddrinfo

    def fake(host: str, port: object, *args: object, **kwargs: object) -> object:
        if host == "dual":
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 5020, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 5020)),
            ]
        if host == "mapped":
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:127.0.0.1", 5020, 0, 0))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    assert device_key("newera+tcp://dual:5020") == (
        "tcp",
        "5020",
        "newera.address=0",
        "127.0.0.1",
        "::1",
    )
    urls = ["newera+tcp://dual:5020", "newera+tcp://[::1]:5020", "newera+tcp://mapped:5020"]
    assert duplicate_devices(urls) == [(urls[0], urls[1]), (urls[0], urls[2])]


@pytest.mark.timeout(5)
def test_unresolvable_host_is_one_line() -> None:
    with pytest.raises(DriverConfigError, match=r"'no-such-pump\.invalid'") as caught:
        device_key("modbus+tcp://no-such-pump.invalid:5020")
    assert "\n" not in str(caught.value)
    with pytest.raises(DriverConfigError, match=r"no-such-pump\.invalid"):
        duplicate_devices(["modbus+tcp://127.0.0.1:5020", "modbus+tcp://no-such-pump.invalid:1"])


def test_resolver_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(DriverConfigError, match=r"host 'pump-7': does not resolve \(Name"):
        device_key("newera+tcp://pump-7:4001")


def test_device_key_validates_the_url() -> None:
    with pytest.raises(DriverConfigError, match="'unit'"):
        device_key("modbus+tcp://127.0.0.1:5020?unit=0")
    with pytest.raises(DriverConfigError, match="scheme"):
        device_key("http://127.0.0.1:80")


# -- the pump command ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url_query", "flags", "expected"),
    [
        ("?timeout_s=5&retries=0", [], (5.0, 0)),  # the URL wins over the flag's default
        ("", [], (1.0, 2)),  # neither: the command's default timeout, the model's retries
        ("?timeout_s=5", ["--timeout-s", "0.25"], (0.25, 2)),  # a typed flag wins
    ],
)
def test_pump_command_precedence(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url_query: str,
    flags: list[str],
    expected: tuple[float, int],
) -> None:
    from drivers.errors import LinkLostError
    from gateway.cli import main

    seen: list[tuple[float, int]] = []

    def fake_open(self: NeweraDriver) -> None:
        seen.append((self.options.timeout_s, self.options.retries))
        raise LinkLostError("no pump here")

    monkeypatch.setattr(NeweraDriver, "open", fake_open)
    code = main(["pump", "status", "--url", f"newera:///dev/ttyUSB9{url_query}", *flags])
    assert (code, seen) == (1, [expected])
    assert "no pump here" in capsys.readouterr().err


def test_pump_command_bad_url_option_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["pump", "status", "--url", "newera:///dev/ttyUSB9?retries=1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: pump URL parameter 'retries': must be a whole number from 0 to 5 (got '1.5')"
    ]
