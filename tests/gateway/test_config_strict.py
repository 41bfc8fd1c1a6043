"""The configuration refuses bad input strictly, at every edge, in one line naming the key.

A number is a number (not ``true``, not ``"70"``, not NaN), a string is bounded, ``state_dir`` is
absolute, ``time_scale`` keeps two polls inside the pump's watchdog, the product is a plausible
product, and an unreadable file is a one-line refusal.  Whatever the input, ``load_config``
returns a config or raises :class:`ConfigError`, nothing else.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.cli import main
from gateway.config import (
    CONFIG_FILE_MAX_BYTES,
    PUMP_WATCHDOG_S_MAX,
    ChannelConfig,
    ControlConfig,
    GatewayConfig,
    OrderConfig,
    ProductConfig,
    build_config,
    format_validation_error,
    load_config,
    time_scale_max,
)
from gateway.dosing import Arm, Product
from gateway.errors import ConfigError, InputError

STATE_DIR = "/var/lib/infusion-gateway-test-never-created"

VALID_TOML = """\
state_dir = "/var/lib/infusion-gateway"
time_scale = 1.0

[control]
poll_interval_s = 1.0
pump_watchdog_s = 10

[control.auto_resume]
max_gap_s = 120
max_per_day = 3

[api]
listen = "127.0.0.1:8470"

[[channels]]
id = "bed1"
pump = "newera:///dev/ttyUSB0"
arm = "flat"
weight_kg = 70
randomised_at = 2026-11-29T06:30:00+01:00

[channels.product]
concentration_mg_per_ml = 50.0
igm_content_mg_per_ml = 6.0
"""


def write(tmp_path: Path, text: str | bytes, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refusal(tmp_path: Path, text: str | bytes) -> str:
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, text))
    message = str(refused.value)
    assert "\n" not in message
    return message


def config_data(**channel: Any) -> dict[str, Any]:
    return {
        "state_dir": STATE_DIR,
        "channels": [{"id": "bed1", "pump": "modbus+tcp://127.0.0.1:1", **channel}],
    }


def outcome(load: Callable[[], GatewayConfig]) -> GatewayConfig | ConfigError:
    """What ``load`` returns, or the ConfigError it raises (anything else propagates)."""
    try:
        return load()
    except ConfigError as exc:
        return exc


def built_refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as refused:
        build_config(data)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_valid_toml_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID_TOML))
    channel = config.channels[0]
    assert channel.weight_kg == 70.0  # a TOML integer is a number
    assert channel.randomised_at == datetime(2026, 11, 29, 5, 30, tzinfo=UTC)
    assert config.control.pump_watchdog_s == 10.0


# -- 1. strict types -----------------------------------------------------------------------------


def test_config_refuses_string_as_weight(tmp_path: Path) -> None:
    message = refusal(tmp_path, VALID_TOML.replace("weight_kg = 70", 'weight_kg = "70"'))
    assert message == (
        f"{tmp_path / 'gateway.toml'} channels[0].weight_kg: must be a number "
        "(not a string or true/false) (got '70')"
    )


def test_config_refuses_bool_as_number(tmp_path: Path) -> None:
    message = refusal(tmp_path, VALID_TOML.replace("weight_kg = 70", "weight_kg = true"))
    assert message.endswith(
        "channels[0].weight_kg: must be a number (not a string or true/false) (got True)"
    )
    message = refusal(
        tmp_path, VALID_TOML.replace("poll_interval_s = 1.0", "poll_interval_s = true")
    )
    assert message.endswith(
        "control.poll_interval_s: must be a number from 0.05 to 60 (not a string or true/false) "
        "(got True)"
    )


def test_config_refuses_string_as_time_scale_and_names_the_range() -> None:
    message = built_refusal({**config_data(), "time_scale": "600"})
    assert message == (
        "config time_scale: must be a number above 0 and at most 100000 "
        "(not a string or true/false) (got '600')"
    )


def test_config_refuses_number_and_string_as_bool() -> None:
    assert "confirm: must be true or false" in built_refusal(
        config_data(arm="flat", weight_kg=70.0, confirm=1)
    )
    assert "auto_resume.enabled: must be true or false" in built_refusal(
        {**config_data(), "control": {"auto_resume": {"enabled": "yes"}}}
    )


def test_config_refuses_fraction_as_whole_number() -> None:
    message = built_refusal({**config_data(), "control": {"request_retries": 2.0}})
    assert "control.request_retries: must be a whole number from 0 to 5" in message


def test_config_refuses_number_as_string() -> None:
    assert "channels[0].pump: must be a string" in built_refusal(
        {"state_dir": STATE_DIR, "channels": [{"id": "bed1", "pump": 5}]}
    )
    assert "channels[0].id: must be a string" in built_refusal(
        {"state_dir": STATE_DIR, "channels": [{"id": 1, "pump": "x"}]}
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_toml_nan_and_inf_refused_naming_the_field(tmp_path: Path, value: str) -> None:
    message = refusal(tmp_path, VALID_TOML.replace("weight_kg = 70", f"weight_kg = {value}"))
    assert "channels[0].weight_kg: must be a finite number (not nan or inf)" in message


def test_nan_from_flags_or_python_refused_naming_the_field() -> None:
    message = built_refusal(config_data(arm="flat", weight_kg=math.nan))
    assert (
        message
        == "config channels[0].weight_kg: must be a finite number (not nan or inf) (got nan)"
    )
    message = built_refusal({**config_data(), "control": {"poll_interval_s": math.inf}})
    assert "control.poll_interval_s: must be a finite number" in message


def test_huge_toml_integer_is_one_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, VALID_TOML.replace("weight_kg = 70", "weight_kg = " + "9" * 5000))
    assert "not valid TOML" in message
    message = refusal(tmp_path, VALID_TOML.replace("weight_kg = 70", f"weight_kg = {2**70}"))
    assert "channels[0].weight_kg: must be a number within its range" in message


def test_deeply_nested_toml_is_one_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n" + VALID_TOML)
    assert "not valid TOML" in message
    nested = "x = " + "[" * 40 + "]" * 40 + "\n"
    message = refusal(tmp_path, nested + VALID_TOML)
    assert "must be nested at most 32 tables or arrays deep" in message


@pytest.mark.parametrize(
    ("field", "length", "limit"),
    [("pump", 513, 512), ("start_override_reason", 501, 500), ("id", 33, 32)],
)
def test_config_strings_are_bounded(field: str, length: int, limit: int) -> None:
    channel: dict[str, Any] = {"id": "bed1", "pump": "modbus+tcp://127.0.0.1:1"}
    channel.update(arm="flat", weight_kg=70.0)
    channel[field] = "a" * length
    message = built_refusal({"state_dir": STATE_DIR, "channels": [channel]})
    assert f"channels[0].{field}: must be" in message
    if field != "id":
        assert f"at most {limit} characters" in message
    channel[field] = "a" * limit
    build_config({"state_dir": STATE_DIR, "channels": [channel]})


def test_api_listen_is_bounded_and_ascii_port() -> None:
    message = built_refusal({**config_data(), "api": {"listen": "a" * 300 + ":1"}})
    assert "api.listen: must be at most 300 characters" in message
    message = built_refusal({**config_data(), "api": {"listen": "127.0.0.1:\u00b2"}})
    assert "api.listen: must be HOST:PORT with a port from 0 to 65535" in message


def test_toml_datetime_without_offset_refused(tmp_path: Path) -> None:
    text = VALID_TOML.replace("2026-11-29T06:30:00+01:00", "2026-11-29T06:30:00")
    message = refusal(tmp_path, text)
    assert "channels[0].randomised_at: must be a date-time with a zone offset" in message
    text = VALID_TOML.replace("2026-11-29T06:30:00+01:00", "2026-11-29")
    assert "channels[0].randomised_at: must be a date-time" in refusal(tmp_path, text)
    text = VALID_TOML.replace("2026-11-29T06:30:00+01:00", "1764394200")
    assert "channels[0].randomised_at: must be a date-time" in refusal(tmp_path, text)


def test_enum_as_number_refused() -> None:
    message = built_refusal(config_data(arm=1, weight_kg=70.0))
    assert "channels[0].arm: must be 'flat' or 'titer' (got 1)" in message


def test_order_body_strict_json_refuses_string_weight_and_true() -> None:
    """The API validates a body with ``OrderConfig.model_validate_json(raw, strict=True)``."""
    for raw in ('{"arm":"flat","weight_kg":"70"}', '{"arm":"flat","weight_kg":true}', "true"):
        with pytest.raises(ValidationError) as refused:
            OrderConfig.model_validate_json(raw, strict=True)
        line = format_validation_error(refused.value, prefix="order")
        assert "\n" not in line
    with pytest.raises(ValidationError) as refused:
        OrderConfig.model_validate_json('{"arm":"flat","weight_kg":"70"}', strict=True)
    assert format_validation_error(refused.value, prefix="order") == (
        "order weight_kg: must be a number (not a string or true/false) (got '70')"
    )
    for raw in ('{"arm":"flat","weight_kg":NaN}', '{"arm":"flat","weight_kg":1e999}'):
        with pytest.raises(ValidationError, match="finite"):
            OrderConfig.model_validate_json(raw, strict=True)
    order = OrderConfig.model_validate_json(
        '{"arm":"titer","weight_kg":70,"igm_mg_dl":30,"hematocrit":0.35,'
        '"randomised_at":"2026-11-29T06:30:00+01:00","titer_measured_at":"2026-11-29T06:00:00Z"}',
        strict=True,
    )
    assert order.arm is Arm.TITER
    assert order.weight_kg == 70.0
    assert order.randomised_at == datetime(2026, 11, 29, 6, 30, tzinfo=timezone(timedelta(hours=1)))


def test_order_body_refuses_number_as_date_time() -> None:
    with pytest.raises(ValidationError, match="randomised_at"):
        OrderConfig.model_validate_json(
            '{"arm":"flat","weight_kg":70,"randomised_at":1764394200}', strict=True
        )


def test_direct_python_construction_keeps_working(tmp_path: Path) -> None:
    order = OrderConfig(arm=Arm.FLAT, weight_kg=70.0)
    assert order.weight_kg == 70.0
    # As conftest's make_rig does: an enum and a date-time as strings, an int for a float.
    settings: dict[str, Any] = {
        "id": "bed1",
        "pump": "modbus+tcp://127.0.0.1:1",
        "arm": "flat",
        "weight_kg": 70,
        "randomised_at": "2026-11-29T06:30:00Z",
    }
    channel = ChannelConfig(**settings)
    config = GatewayConfig(
        state_dir=tmp_path, channels=[channel], control=ControlConfig(poll_interval_s=2)
    )
    assert config.state_dir == tmp_path
    assert config.channels[0].arm is Arm.FLAT


def test_direct_python_construction_refuses_bool_and_string_numbers() -> None:
    with pytest.raises(ValidationError, match="float_type"):
        OrderConfig(arm=Arm.FLAT, weight_kg=True)
    with pytest.raises(ValidationError, match="float_type"):
        OrderConfig(arm=Arm.FLAT, weight_kg="70")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="finite_number"):
        ControlConfig(poll_interval_s=math.nan)
    with pytest.raises(ValidationError, match="bool_type"):
        OrderConfig(arm=Arm.FLAT, weight_kg=70.0, confirm="yes")  # type: ignore[arg-type]


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    "value",
    [b"\xff" * 1000, 10**5000, math.nan, _BadRepr(), "x\n" * 10_000, [10**5000], {"a": _BadRepr()}],
    ids=["bytes", "huge-int", "nan", "bad-repr", "long-text", "list-of-huge-int", "dict-bad-repr"],
)
def test_format_validation_error_cannot_fail_on_what_it_reports(value: object) -> None:
    with pytest.raises(ValidationError) as refused:
        GatewayConfig.model_validate(
            {
                "state_dir": STATE_DIR,
                "time_scale": value,
                "channels": [{"id": "bed1", "pump": value, "weight_kg": value, "arm": "flat"}],
            }
        )
    line = format_validation_error(refused.value)
    assert "\n" not in line
    assert "config time_scale: must be" in line
    assert "config channels[0].weight_kg: must be" in line
    assert len(line) < 4000


def test_build_config_refuses_python_objects_naming_the_key() -> None:
    message = built_refusal({**config_data(), "time_scale": b"600"})
    assert message.startswith("config time_scale: must be a number, a string, true/false")
    message = built_refusal({**config_data(), "time_scale": "\udcff"})
    assert message.startswith("config time_scale: must be text without undecodable bytes")


def test_every_problem_named_in_one_line() -> None:
    message = built_refusal(
        {
            "state_dir": "",
            "time_scale": True,
            "channels": [{"id": "bed1", "pump": "x", "arm": "flat", "weight_kg": "70"}],
        }
    )
    assert "config state_dir: must be an absolute path" in message
    assert "config time_scale: must be a number" in message
    assert "config channels[0].weight_kg: must be a number" in message


# -- 2. the config file itself ---------------------------------------------------------------


def test_non_utf8_config_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, VALID_TOML.encode().replace(b"bed1", b"b\xe9d1"))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: config {str(path)!r}: must be UTF-8 text (byte 0xe9 at offset "
        f"{VALID_TOML.index('bed1') + 1} is not)\n"
    )
    assert refusal(tmp_path, b"\xff\xfe\x00").endswith("(byte 0xff at offset 0 is not)")


@pytest.mark.timeout(10)
def test_config_fifo_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "gateway.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)


def test_config_directory_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="cannot read: a directory"):
        load_config(tmp_path)
    assert main(["run", "--config", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_config_larger_than_1_mib_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VALID_TOML + "#" * CONFIG_FILE_MAX_BYTES)
    with pytest.raises(ConfigError, match=f"must be at most {CONFIG_FILE_MAX_BYTES} bytes"):
        load_config(path)


@pytest.mark.parametrize("path", ["/nonexistent-dir-xyz/gateway.toml", "a\x00b"])
def test_missing_or_impossible_config_path_is_one_line(path: str) -> None:
    with pytest.raises(ConfigError, match="cannot read") as refused:
        load_config(path)
    assert "\n" not in str(refused.value)


def test_config_file_name_with_a_newline_stays_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID_TOML.replace("weight_kg = 70", "weight_kg = 7"), "bad\nname.toml")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "\n" not in str(refused.value)
    assert "channels[0].weight_kg: must be a number from 30 to 250 kg (got 7.0)" in str(
        refused.value
    )


# -- 3. state_dir --------------------------------------------------------------------------------


def test_state_dir_empty_refused() -> None:
    assert built_refusal({**config_data(), "state_dir": ""}).startswith(
        "config state_dir: must be an absolute path"
    )


def test_state_dir_dot_refused() -> None:
    assert "(got '.')" in built_refusal({**config_data(), "state_dir": "."})


@pytest.mark.parametrize("state_dir", ["state", "./state", "~/state", "var/lib/gateway"])
def test_state_dir_relative_refused(state_dir: str) -> None:
    message = built_refusal({**config_data(), "state_dir": state_dir})
    assert message.startswith("config state_dir: must be an absolute path")


def test_state_dir_with_nul_refused() -> None:
    message = built_refusal({**config_data(), "state_dir": "/var/lib/a\x00b"})
    assert message.startswith("config state_dir: must be an absolute path")
    assert "no NUL" in message


def test_state_dir_refused_in_python_construction_too() -> None:
    with pytest.raises(ValidationError, match="state_dir"):
        GatewayConfig(state_dir=Path(), channels=[])


def test_run_flag_state_dir_relative_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--pump", "modbus+tcp://127.0.0.1:1", "--arm", "flat", "--weight-kg", "70"]
    argv += ["--randomised-at", "2026-11-29T06:30:00Z", "--state-dir", "relative/dir"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --state-dir: must be an absolute path")
    assert len(err.splitlines()) == 1


@pytest.mark.timeout(30)
def test_demo_state_dir_relative_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--state-dir", "relative/dir"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --state-dir: must be an absolute path")
    assert len(err.splitlines()) == 1


def test_state_dir_of_a_config_file_must_be_absolute(tmp_path: Path) -> None:
    text = VALID_TOML.replace('state_dir = "/var/lib/infusion-gateway"', 'state_dir = ""')
    assert "state_dir: must be an absolute path" in refusal(tmp_path, text)


def test_token_file_empty_refused() -> None:
    message = built_refusal({**config_data(), "api": {"token_file": ""}})
    assert "api.token_file: must be a path to a file" in message


# -- 4. time_scale keeps two polls inside the pump watchdog ---------------------------------


def test_time_scale_bound_keeps_two_polls_in_watchdog() -> None:
    message = built_refusal({**config_data(), "time_scale": 6000.0})
    assert message == (
        "config time_scale: must be at most 2550 with control.min_real_poll_interval_s = 0.05 "
        "(the pump watchdog, at most 255 s, must cover two polls) (got 6000.0)"
    )
    config = build_config({**config_data(), "time_scale": 2550})
    assert config.effective_pump_watchdog_s >= 2 * config.effective_poll_interval_s
    assert "must be at most 2550" in built_refusal({**config_data(), "time_scale": 2551})


def test_time_scale_bound_follows_min_real_poll_interval() -> None:
    data = {**config_data(), "time_scale": 6000.0, "control": {"min_real_poll_interval_s": 0.02}}
    config = build_config(data)
    assert config.effective_pump_watchdog_s >= 2 * config.effective_poll_interval_s
    data["control"] = {"min_real_poll_interval_s": 0.1}
    assert "must be at most 1275 with control.min_real_poll_interval_s = 0.1" in built_refusal(data)


def test_time_scale_run_flag_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--pump", "modbus+tcp://127.0.0.1:1", "--arm", "flat", "--weight-kg", "70"]
    argv += ["--randomised-at", "2026-11-29T06:30:00Z", "--state-dir", str(tmp_path / "s")]
    assert main([*argv, "--time-scale", "6000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --time-scale: must be at most 2550")
    assert not (tmp_path / "s").exists()  # refused before anything was created


@settings(max_examples=300, deadline=None)
@given(
    time_scale=st.floats(min_value=0.0, max_value=100_000.0, exclude_min=True),
    poll_interval_s=st.floats(min_value=0.05, max_value=60.0),
    min_real_poll_interval_s=st.floats(min_value=0.01, max_value=10.0),
    pump_watchdog_s=st.floats(min_value=1.0, max_value=PUMP_WATCHDOG_S_MAX),
)
def test_every_accepted_config_has_two_polls_in_its_watchdog(
    time_scale: float,
    poll_interval_s: float,
    min_real_poll_interval_s: float,
    pump_watchdog_s: float,
) -> None:
    data = {
        **config_data(),
        "time_scale": time_scale,
        "control": {
            "poll_interval_s": poll_interval_s,
            "min_real_poll_interval_s": min_real_poll_interval_s,
            "pump_watchdog_s": pump_watchdog_s,
        },
    }
    bound = time_scale_max(min_real_poll_interval_s)
    config = outcome(lambda: build_config(data))
    if isinstance(config, ConfigError):
        assert time_scale > bound  # refused only when it has to be
        assert str(config).startswith("config time_scale: must be at most ")
        shown = float(re.findall(r"at most ([0-9.]+) with", str(config))[0])
        assert shown <= bound  # the bound shown is itself accepted
        return
    assert time_scale <= bound
    assert config.effective_pump_watchdog_s >= 2 * config.effective_poll_interval_s
    assert config.effective_pump_watchdog_s <= PUMP_WATCHDOG_S_MAX


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.01, max_value=10.0))
def test_the_time_scale_bound_itself_is_accepted(min_real_poll_interval_s: float) -> None:
    bound = time_scale_max(min_real_poll_interval_s)
    if bound > 100_000.0:  # the general cap wins
        return
    control = {"min_real_poll_interval_s": min_real_poll_interval_s, "poll_interval_s": 60.0}
    config = build_config({**config_data(), "time_scale": bound, "control": control})
    assert config.effective_pump_watchdog_s >= 2 * config.effective_poll_interval_s
    with pytest.raises(ConfigError, match="time_scale"):
        build_config(
            {**config_data(), "time_scale": math.nextafter(bound, math.inf), "control": control}
        )


# -- 5. the product ------------------------------------------------------------------------------


def test_concentration_1e_9_refused() -> None:
    message = built_refusal(
        config_data(arm="flat", weight_kg=70.0, product={"concentration_mg_per_ml": 1e-9})
    )
    assert message == (
        "config channels[0].product.concentration_mg_per_ml: must be a number from 10 to 200 "
        "mg/mL (got 1e-09)"
    )
    with pytest.raises(InputError, match="concentration_mg_per_ml: must be a number from 10 to"):
        Product(1e-9, 6.0)


@pytest.mark.parametrize("concentration", [9.99, 200.01, 1000.0, 0.0, -50.0])
def test_concentration_outside_10_to_200_refused(concentration: float) -> None:
    with pytest.raises(InputError, match="from 10 to 200 mg/mL"):
        Product(concentration, 6.0)


@pytest.mark.parametrize("igm", [0.0, -1.0, 50.0, 60.0])
def test_igm_content_above_zero_and_below_concentration(igm: float) -> None:
    with pytest.raises(ValidationError, match="igm_content_mg_per_ml"):
        ProductConfig(concentration_mg_per_ml=50.0, igm_content_mg_per_ml=igm)


@pytest.mark.parametrize(("concentration", "igm"), [(50.0, 6.0), (10.0, 0.5), (200.0, 199.0)])
def test_plausible_products_accepted(concentration: float, igm: float) -> None:
    product = ProductConfig(concentration_mg_per_ml=concentration, igm_content_mg_per_ml=igm)
    assert product.to_product() == Product(concentration, igm)


# -- 6. CLI flags feed the same strict models -----------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--concentration-mg-per-ml", "1e-9"],
            "error: --concentration-mg-per-ml: must be a number from 10 to 200 mg/mL (got 1e-09)",
        ),
        (
            ["--weight-kg", "nan"],
            "error: --weight-kg: must be a finite number (not nan or inf) (got nan)",
        ),
        (
            ["--igm-content-mg-per-ml", "60"],
            "error: --igm-content-mg-per-ml: must be a number above 0 and below 50 mg/mL "
            "(below concentration_mg_per_ml) (got 60.0)",
        ),
        (
            ["--hematocrit", "0.3"],
            "error: --hematocrit: must be omitted for the flat arm (got 0.3)",
        ),
    ],
)
def test_plan_bad_flag_is_exit_2_one_line_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    assert main(["plan", "--arm", "flat", "--weight-kg", "70", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == line + "\n"


def test_order_bad_flag_is_exit_2_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An unreachable daemon would be exit 1: 2 says the flags were refused before any request.
    argv = ["order", "--api", "127.0.0.1:1", "--arm", "flat", "--weight-kg", "inf"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "error: --weight-kg: must be a finite number (not nan or inf) (got inf)\n"
    argv = ["order", "--api", "127.0.0.1:1", "--arm", "flat", "--weight-kg", "20"]
    assert main(argv) == 2
    assert "--weight-kg: must be a number from 30 to 250 kg" in capsys.readouterr().err


# -- the loader never fails otherwise -------------------------------------------------------------

_SCALARS = (
    st.text(st.characters(codec="utf-8"), max_size=20)
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.datetimes(timezones=st.none() | st.just(UTC) | st.just(timezone(timedelta(hours=1))))
    | st.dates()
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(st.characters(codec="utf-8"), min_size=1, max_size=8), inner, max_size=3
        )
    ),
    max_leaves=8,
)


def _maybe(value: Any) -> st.SearchStrategy[Any]:
    """The valid value most of the time, or anything at all."""
    return st.one_of(st.just(value), st.just(value), _VALUES)


_CHANNEL = st.fixed_dictionaries(
    {
        "id": _maybe("bed1"),
        "pump": _maybe("newera:///dev/ttyUSB0"),
    },
    optional={
        "arm": _maybe("flat"),
        "weight_kg": _maybe(70),
        "igm_mg_dl": _maybe(30.0),
        "hematocrit": _maybe(0.35),
        "ceiling_ml_per_kg_per_h": _maybe(0.3),
        "randomised_at": _maybe(datetime(2026, 11, 29, 6, 30, tzinfo=UTC)),
        "titer_measured_at": _maybe(datetime(2026, 11, 29, 6, 0, tzinfo=UTC)),
        "start_override_reason": _maybe("late transfer"),
        "confirm": _maybe(False),
        "product": _maybe({"concentration_mg_per_ml": 50.0, "igm_content_mg_per_ml": 6.0}),
        "extra": _VALUES,
    },
)
_DOCUMENT = st.fixed_dictionaries(
    {
        "state_dir": _maybe("/var/lib/infusion-gateway"),
        "channels": st.one_of(st.lists(_CHANNEL, min_size=1, max_size=2), _VALUES),
    },
    optional={
        "time_scale": _maybe(600.0),
        "control": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "poll_interval_s": _maybe(1.0),
                    "min_real_poll_interval_s": _maybe(0.05),
                    "pump_watchdog_s": _maybe(10),
                    "request_retries": _maybe(1),
                    "late_titer": _maybe("shift"),
                    "auto_resume": _maybe({"enabled": True, "max_per_day": 3}),
                },
            ),
            _VALUES,
        ),
        "api": _maybe({"listen": "127.0.0.1:8470", "token_file": "/etc/infusion-gateway/token"}),
        "junk": _VALUES,
    },
)


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c for c in text
    )
    return f'"{escaped}"'


def _toml_value(value: Any) -> str:
    """``value`` as a TOML inline value (this test's own tiny writer)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(type(value))


def _toml_document(document: dict[str, Any]) -> str:
    return "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in document.items())


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=_DOCUMENT)
def test_load_config_returns_a_config_or_raises_config_error(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    path = write(tmp_path, _toml_document(document))
    config = outcome(lambda: load_config(path))
    if isinstance(config, ConfigError):
        assert "\n" not in str(config)
        return
    assert isinstance(config, GatewayConfig)
    assert config.state_dir.is_absolute()
    assert config.effective_pump_watchdog_s >= 2 * config.effective_poll_interval_s


@settings(max_examples=200, deadline=None)
@given(document=_DOCUMENT)
def test_build_config_returns_a_config_or_raises_config_error(document: dict[str, Any]) -> None:
    config = outcome(lambda: build_config(document))
    if isinstance(config, ConfigError):
        assert "\n" not in str(config)
        return
    assert isinstance(config, GatewayConfig)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_as_config_are_a_config_error(tmp_path: Path, raw: bytes) -> None:
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "\n" not in str(refused.value)
