"""The bedside commands (``order``, ``titer``, ``weight``, ``vasopressors-withdrawn``) carry the
clinical rules' fields from the command line to the channel (docs/dosing.md, rules 1, 3, 5, 7).

Each command runs in-process through :func:`gateway.cli.main`; its HTTP request is handed to the
daemon's real API app (a FastAPI ``TestClient``) instead of a socket, so the argv, the body the
client builds, the API's checks, the channel's intake and the CLI's rendering of a refusal are
all the real ones.  The gateway runs on a manual clock and a model pump.
"""

from __future__ import annotations

import asyncio
import io
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from gateway.api import create_app
from gateway.channel import ChannelState
from gateway.cli import main
from gateway.config import build_config
from gateway.daemon import Gateway
from gateway.planner import SECONDS_PER_HOUR
from gateway.timestamps import format_instant, parse_instant
from gateway.tokens import TokenSource
from protocol.clock import ManualClock
from simulator.model import PumpModel
from tests.gateway.conftest import RANDOMISED_AT, TITER_DRAWN_AT
from tests.gateway.model_driver import ModelDriver
from tests.gateway.token_files import write_token_file

H = SECONDS_PER_HOUR


class _Answer:
    """What ``urlopen`` returns: the body, readable once, as a context manager."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def read(self) -> bytes:
        return self._content

    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass
class Bedside:
    gateway: Gateway
    clock: ManualClock
    model: PumpModel
    client: TestClient
    token_file: Path
    #: Each request the CLI sent: (method, path, body).
    sent: list[tuple[str, str, bytes | None]]

    def cli(self, *argv: str) -> int:
        command, *rest = argv
        return main(
            [command, "--api", "127.0.0.1:8470", "--token-file", str(self.token_file), *rest]
        )

    def tick(self) -> None:
        asyncio.run(self.gateway.tick())

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.gateway.journal.events("bed1", kind)]

    def order(self, *flags: str) -> int:
        return self.cli("order", "--randomised-at", RANDOMISED_AT, *flags)


@pytest.fixture
def bedside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bedside]:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
    config = build_config(
        {
            "state_dir": str(tmp_path / "state"),
            "control": {"poll_interval_s": 60.0},
            "channels": [{"id": "bed1", "pump": "modbus+tcp://127.0.0.1:1"}],
        }
    )
    gw = Gateway(config, clock=clock, driver_factory=lambda url: ModelDriver(model))
    token_file = write_token_file(tmp_path / "token")
    sent: list[tuple[str, str, bytes | None]] = []
    with TestClient(create_app(gw, TokenSource(token_file))) as client:

        def urlopen(request: urllib.request.Request, timeout: float) -> _Answer:
            assert timeout > 0
            path = urlsplit(request.full_url).path
            body = request.data if isinstance(request.data, bytes) else None
            sent.append((request.get_method(), path, body))
            answer = client.request(
                request.get_method(), path, content=body, headers=dict(request.header_items())
            )
            if answer.status_code >= 400:
                raise urllib.error.HTTPError(
                    request.full_url,
                    answer.status_code,
                    answer.reason_phrase,
                    answer.headers,
                    io.BytesIO(answer.content),
                )
            return _Answer(answer.content)

        # The client's one way out (gateway/cli/client.py, ``call``).
        monkeypatch.setattr(urllib.request, "urlopen", urlopen)
        yield Bedside(gw, clock, model, client, token_file, sent)
    asyncio.run(gw.shutdown("test over"))


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    return err


# -- rule 5: the order command takes the randomisation time --------------------------------------


def test_rule_5_order_command_carries_randomised_at_and_the_start_is_checked(
    bedside: Bedside,
) -> None:
    bedside.tick()
    assert bedside.order("--arm", "flat", "--weight-kg", "70") == 0
    (order,) = bedside.events("order_received")
    assert order["order"]["randomised_at"] == RANDOMISED_AT
    bedside.tick()
    assert bedside.gateway.channels["bed1"].state is ChannelState.INFUSING
    (check,) = bedside.events("start_check")
    assert check["within_window"] is True
    assert check["randomised_at_s"] == parse_instant("randomised_at", RANDOMISED_AT)


def test_rule_5_order_command_without_randomised_at_is_refused_naming_the_field(
    bedside: Bedside, capsys: pytest.CaptureFixture[str]
) -> None:
    bedside.tick()
    assert bedside.cli("order", "--arm", "flat", "--weight-kg", "70") == 2
    assert "randomised_at: must be given" in _error(capsys)
    bedside.tick()
    assert bedside.gateway.channels["bed1"].state is ChannelState.AWAITING_ORDER
    assert bedside.events("order_received") == []


def test_rule_5_order_command_later_than_12_h_needs_the_override_reason(
    bedside: Bedside, capsys: pytest.CaptureFixture[str]
) -> None:
    bedside.tick()
    late = format_instant(bedside.clock.wall() - 13 * H)
    flat = ("--arm", "flat", "--weight-kg", "70", "--randomised-at", late)
    assert bedside.cli("order", *flat) == 2
    err = _error(capsys)
    assert "within 12 h before the start" in err
    assert "start_override_reason" in err
    reason = ("--start-override-reason", "consent delayed")
    assert bedside.cli("order", *flat, *reason) == 0
    bedside.tick()
    (check,) = bedside.events("start_check")
    assert check["within_window"] is False
    assert check["override_reason"] == "consent delayed"
    assert check["delay_h"] == pytest.approx(13.0, abs=0.01)


# -- rule 1: a titer says when its blood was drawn, with a zone ---------------------------------


def _titer_course(bedside: Bedside) -> None:
    bedside.tick()
    titer_arm = ("--arm", "titer", "--weight-kg", "70", "--igm-mg-dl", "30")
    assert (
        bedside.order(*titer_arm, "--hematocrit", "0.35", "--titer-measured-at", TITER_DRAWN_AT)
        == 0
    )
    bedside.tick()
    assert bedside.gateway.channels["bed1"].state is ChannelState.INFUSING


def test_rule_1_titer_command_refuses_a_time_without_a_zone_before_sending(
    bedside: Bedside, capsys: pytest.CaptureFixture[str]
) -> None:
    _titer_course(bedside)
    before = len(bedside.sent)
    titer = ("titer", "--igm-mg-dl", "50", "--hematocrit", "0.35")
    assert bedside.cli(*titer, "--measured-at", "2026-01-01T00:30:00") == 2
    assert _error(capsys).startswith("error: --measured-at: must be an ISO-8601 date-time with")
    assert len(bedside.sent) == before  # refused on the command line: nothing was sent
    assert bedside.events("titer_received") == []


def test_rule_1_titer_command_carries_measured_at_and_an_explicit_correction(
    bedside: Bedside, capsys: pytest.CaptureFixture[str]
) -> None:
    _titer_course(bedside)
    drawn = "2026-01-01T01:00:00+01:00"  # the ManualClock's start, in another zone
    titer = ("titer", "--igm-mg-dl", "40", "--hematocrit", "0.35", "--measured-at", drawn)
    assert bedside.cli(*titer, "--corrects-day", "1") == 0
    assert "corrected titer of day 1" in capsys.readouterr().out
    (received,) = bedside.events("titer_received")
    assert received["measured_at_s"] == bedside.clock.wall()
    assert received["corrects_day"] == 1
    bedside.tick()
    (_, corrected) = bedside.events("prescription")
    assert corrected["why"] == "titer of day 1 corrected"
    # A correction of a day that is not running is refused, naming the field.
    assert bedside.cli(*titer, "--corrects-day", "2") == 2
    assert "corrects_day: must be the running, prescribed day" in _error(capsys)


# -- rule 7: a unit mix-up needs --confirm --------------------------------------------------------


def test_rule_7_titer_and_weight_commands_refuse_a_likely_mix_up_until_confirmed(
    bedside: Bedside, capsys: pytest.CaptureFixture[str]
) -> None:
    _titer_course(bedside)
    drawn = format_instant(bedside.clock.wall())
    titer = ("titer", "--igm-mg-dl", "0.3", "--hematocrit", "0.35", "--measured-at", drawn)
    assert bedside.cli(*titer) == 2
    err = _error(capsys)
    assert "did you mean g/L? 0.3 g/L = 30 mg/dL" in err
    assert "run it again with --confirm" in err  # the CLI's way to confirm, not the API's
    assert bedside.cli("weight", "--weight-kg", "154") == 2
    assert "did you mean pounds" in _error(capsys)
    assert bedside.events("titer_received") == bedside.events("weight_received") == []
    assert bedside.cli(*titer, "--confirm") == 0
    assert bedside.cli("weight", "--weight-kg", "154", "--confirm", "--reason", "as weighed") == 0
    (titer_note,) = [e["confirmed_note"] for e in bedside.events("titer_received")]
    (weight_note,) = [e["confirmed_note"] for e in bedside.events("weight_received")]
    assert titer_note.startswith("confirmed outside soft limit")
    assert weight_note.startswith("confirmed outside soft limit")


# -- rule 3: the reply says what vasopressor withdrawal does -------------------------------------


@pytest.mark.parametrize(
    ("arm", "reply"),
    [
        (("--arm", "flat"), "the flat arm is not shortened by vasopressor withdrawal"),
        (
            ("--arm", "titer", "--igm-mg-dl", "30", "--hematocrit", "0.35"),
            "the titer arm ends after the current day",
        ),
    ],
)
def test_rule_3_vasopressors_command_says_what_it_does_to_the_arm(
    bedside: Bedside, capsys: pytest.CaptureFixture[str], arm: tuple[str, ...], reply: str
) -> None:
    bedside.tick()
    extra = ("--titer-measured-at", TITER_DRAWN_AT) if "titer" in arm else ()
    assert bedside.order(*arm, "--weight-kg", "70", *extra) == 0
    bedside.tick()
    capsys.readouterr()
    assert bedside.cli("vasopressors-withdrawn") == 0
    assert reply in capsys.readouterr().out
    bedside.tick()
    kinds = {e.kind for e in bedside.gateway.journal.events("bed1")}
    assert ("vasopressors_withdrawn_ignored" in kinds) is (arm[1] == "flat")
    assert ("vasopressors_withdrawn" in kinds) is (arm[1] == "titer")
