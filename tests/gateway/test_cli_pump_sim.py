"""``infusion-gateway pump`` on all four URL kinds of the simulator; bad CLI input anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from protocol.clock import ManualClock
from simulator.model import PumpModel
from simulator.server import SimulatorServer, serve

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(
    params=[
        ("newera", "pty"),
        ("newera", "tcp://127.0.0.1:0"),
        ("modbus", "tcp://127.0.0.1:0"),
        ("modbus", "pty"),
    ],
    ids=["newera-pty", "newera-tcp", "modbus-tcp", "modbus-rtu"],
)
def server(request: pytest.FixtureRequest) -> Iterator[SimulatorServer]:
    protocol, listen = request.param
    srv = serve(PumpModel(ManualClock(), max_rate_ml_per_h=50.0), protocol=protocol, listen=listen)
    try:
        yield srv
    finally:
        srv.close()


def test_pump_status_json_on_every_url_kind(
    server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pump", "status", "--url", server.pump_url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "stopped"
    assert status["rate_ml_per_h"] == 0.0
    assert status["volume_infused_ml"] == 0.0
    assert status["alarms"] == []


def test_pump_set_rate_start_stop(
    server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["pump", "set-rate", "12.5", "--weight-kg", "70", "--url", server.pump_url, "--json"])
        == 0
    )
    readback = json.loads(capsys.readouterr().out)
    assert readback["exact"] is True
    assert 12.5 - readback["resolution_ml_per_h"] <= readback["readback_ml_per_h"] <= 12.5
    assert main(["pump", "start", "--url", server.pump_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "infusing"
    assert main(["pump", "stop", "--url", server.pump_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] in {"stopped", "paused"}


@pytest.mark.hazard("H-OV-01", "H-IN-01")
def test_invariant_7_pump_set_rate_above_ceiling_refused_before_a_byte_is_sent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The URL names a port that does not exist: had anything been sent, the error would differ.
    code = main(
        ["pump", "set-rate", "28.1", "--weight-kg", "70", "--url", "newera:///dev/nonexistent"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "rate_ml_per_h 28.1 refused" in err
    assert "allowed 0 to 28 mL/h" in err


def test_pump_unreachable_exits_1_with_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pump", "status", "--url", "newera:///dev/nonexistent", "--timeout-s", "0.2"]) == 1
    assert "LinkLostError" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pump", "status", "--url", "newera:///dev/x?address=120"], "'address'"),
        (["pump", "status", "--url", "serial:///dev/x"], "scheme 'serial'"),
        (["sim", "--listen", "udp://x"], "--listen"),
        (["sim", "--time-scale", "0"], "--time-scale"),
        (["demo", "--days", "9"], "--days"),
        (["demo", "--weight-kg", "10"], "--weight-kg"),
    ],
)
@pytest.mark.hazard("H-IN-01")
def test_invariant_7_cli_bad_input_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.hazard("H-IN-01")
def test_invariant_7_run_refuses_bad_config_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n[[channels]]\nid = "bed1"\npump = "newera:///dev/x"\n'
        'arm = "flat"\nweight_kg = 300\nweight = 70\n'
    )
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "channels[0].weight_kg: must be a number from 30 to 250 kg (got 300.0)" in err
    assert "channels[0].weight: unknown key" in err
    assert not (tmp_path / "journal.sqlite3").exists()  # nothing was changed
