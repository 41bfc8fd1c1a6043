"""The hospital interface end to end: HL7 over MLLP in and out, the hospital played by the
third-party ``hl7`` library (its MLLP client sends, its MLLP server receives).

Lab results become titers, orders become orders with the gateway's plan as the answer, every
refusal is an AR naming the reason and changes nothing, a duplicate is answered again and
applied once, and pump observations go out as PCD-01 in order.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Hl7Config
from gateway.daemon import Gateway
from gateway.hl7_inbound import InboundHandler
from gateway.hl7_outbound import ObservationPublisher, observation_due
from gateway.hl7_server import MllpListener
from gateway.outbox import Outbox, OutboxSender
from tests.gateway.conftest import model_gateway
from tests.gateway.hl7_hospital import (
    answer_code,
    lab_message,
    order_message,
    receiver,
    send,
    unescape,
)

pytestmark = pytest.mark.timeout(60)

#: The ManualClock starts at 2026-01-01T00:00Z.
START_S = 1767225600.0
HL7 = Hl7Config(listen="127.0.0.1:0", send_to="127.0.0.1:9", observation_interval_s=600.0)


@contextmanager
def listening(gateway: Gateway, hl7: Hl7Config = HL7) -> Iterator[str]:
    """The gateway's MLLP listener on a loop thread of its own; yields HOST:PORT."""
    sock = socket.create_server(("127.0.0.1", 0))
    listener = MllpListener(sock, InboundHandler(gateway, hl7).handle)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(listener.start())
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=main, name="test-mllp")
    thread.start()
    try:
        assert ready.wait(10)
        yield listener.address
    finally:
        asyncio.run_coroutine_threadsafe(listener.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        sock.close()


@pytest.fixture
def waiting(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway whose channel at bed ICU/12/A waits for its order."""
    gateway = model_gateway(
        tmp_path, {"id": "bed1", "pump": "modbus+tcp://127.0.0.1:1", "bed": "ICU/12/A"}
    )
    asyncio.run(gateway.tick())
    yield gateway
    asyncio.run(gateway.shutdown("test over"))


@pytest.fixture
def bound(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway infusing patient MRN1 (titer arm, from the config)."""
    gateway = model_gateway(
        tmp_path,
        {
            "id": "bed1",
            "pump": "modbus+tcp://127.0.0.1:1",
            "patient_id": "MRN1",
            "arm": "titer",
            "weight_kg": 70.0,
            "igm_mg_dl": 30.0,
            "hematocrit": 0.35,
            "randomised_at": "2025-12-31T23:00:00Z",
            "titer_measured_at": "2025-12-31T23:30:00Z",
        },
    )
    asyncio.run(gateway.tick())
    yield gateway
    asyncio.run(gateway.shutdown("test over"))


def _events(gateway: Gateway, kind: str | None = None) -> list[Any]:
    return list(gateway.journal.events("bed1", kind))


def _msa3(answer: str) -> str:
    for segment in answer.split("\r"):
        if segment.startswith("MSA|"):
            fields = segment.split("|")
            return unescape(fields[3]) if len(fields) > 3 else ""
    return ""


# -- lab results -----------------------------------------------------------------------------


def test_lab_result_becomes_a_titer_for_the_patients_channel(bound: Gateway) -> None:
    with listening(bound) as address:
        answer = send(
            address,
            lab_message("LAB1", "MRN1", igm="0.42", igm_unit="g/L", drawn_at_s=START_S - 600),
        )
    assert answer_code(answer) == "AA"
    (titer,) = [e.payload for e in _events(bound, "titer_received")]
    assert titer["igm_mg_dl"] == pytest.approx(42.0)
    assert titer["hematocrit"] == pytest.approx(0.35)


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (lab_message("L2", "MRN9", drawn_at_s=START_S - 600), "patient 'MRN9' is on no channel"),
        (
            lab_message("L3", "MRN1", igm_unit="mmol/L", drawn_at_s=START_S - 600),
            "unit 'mmol/L'",
        ),
        (lab_message("L4", "MRN1", drawn_at_s=None), "OBX-14"),
        (lab_message("L5", "MRN1", status="P", drawn_at_s=START_S - 600), "OBX-11"),
        (lab_message("L6", "MRN1", igm="1500", drawn_at_s=START_S - 600), "igm"),
        (lab_message("L7", "MRN1", igm="0.3", drawn_at_s=START_S - 600), "g/L"),
        ("MSH|^~\\&|LAB|HOSP|GW|ICU|||ADT^A01|X1|P|2.6\r", "ADT^A01"),
        ("not hl7 at all", "not read"),
    ],
)
@pytest.mark.hazard("H-WP-01")
def test_a_refused_lab_result_is_ar_naming_the_reason_and_changes_nothing(
    bound: Gateway, message: str, words: str
) -> None:
    before = _events(bound)
    with listening(bound) as address:
        answer = send(address, message)
    assert answer_code(answer) == "AR"
    assert words in _msa3(answer), _msa3(answer)
    assert _events(bound) == before


@pytest.mark.hazard("H-OV-06")
def test_a_duplicate_message_is_answered_again_and_applied_once(bound: Gateway) -> None:
    message = lab_message("LAB-DUP", "MRN1", igm="42", drawn_at_s=START_S - 600)
    with listening(bound) as address:
        first = send(address, message)
        again = send(address, message)
    assert answer_code(first) == "AA"
    assert again == first
    assert len(_events(bound, "titer_received")) == 1


# -- orders ----------------------------------------------------------------------------------


@pytest.mark.hazard("H-WP-01")
def test_order_by_bed_is_accepted_with_the_gateways_plan_and_binds_the_patient(
    waiting: Gateway,
) -> None:
    with listening(waiting) as address:
        answer = send(
            address,
            order_message("ORD1", "MRN7", randomised_at_s=START_S - 3600),
        )
        other = send(
            address,
            lab_message("LAB9", "MRN8", drawn_at_s=START_S - 600),
        )
    assert answer_code(answer) == "AA"
    assert "RRG^O16" in answer
    # The plan answered is the plan `infusion-gateway plan` gives: day 1, 371.58 mL at 15.48 mL/h.
    assert "371.58" in answer
    assert "15.48" in answer
    assert len(_events(waiting, "order_received")) == 1
    assert answer_code(other) == "AR"
    assert waiting.journal.get_meta("hl7_patient:bed1") == "MRN7"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"randomised_at_s": None}, "randomis"),
        ({"weight_kg": "300"}, "weight_kg"),
        ({"arm_code": "NOPE"}, "arm code 'NOPE' unknown"),
        ({"product_code": "OTHER"}, "product code 'OTHER' unknown"),
        ({"rate_ml_per_h": "40"}, "above this patient's ceiling 28.00 mL/h"),
        ({"bed": "ICU^99^Z"}, "no channel stands at bed 'ICU/99/Z'"),
    ],
)
@pytest.mark.hazard("H-OV-01", "H-WP-01")
def test_a_refused_order_is_ar_naming_the_reason_and_changes_nothing(
    waiting: Gateway, changes: dict[str, Any], words: str
) -> None:
    before = _events(waiting)
    fields: dict[str, Any] = {"randomised_at_s": START_S - 3600, **changes}
    with listening(waiting) as address:
        answer = send(address, order_message("ORD2", "MRN7", **fields))
    assert answer_code(answer) == "AR"
    assert words in unescape(answer), answer
    assert _events(waiting) == before
    assert waiting.journal.get_meta("hl7_patient:bed1") is None


@pytest.mark.hazard("H-WP-01")
def test_an_order_for_another_patient_on_a_bound_channel_is_refused(bound: Gateway) -> None:
    before = _events(bound)
    bed_of_bound = "ICU^12^A"
    with listening(bound) as address:
        answer = send(
            address,
            order_message("ORD3", "MRN2", bed=bed_of_bound, randomised_at_s=START_S - 3600),
        )
    assert answer_code(answer) == "AR"
    assert _events(bound) == before


# -- observations out ------------------------------------------------------------------------


def test_observation_due_on_change_and_on_interval() -> None:
    assert observation_due(None, "infusing", (), 0.0, 60.0)
    from gateway.hl7_outbound import Sent

    last = Sent("infusing", (), 100.0)
    assert not observation_due(last, "infusing", (), 159.0, 60.0)
    assert observation_due(last, "infusing", (), 160.0, 60.0)
    assert observation_due(last, "alarm", (), 101.0, 60.0)
    assert observation_due(last, "infusing", ("pump_occlusion",), 101.0, 60.0)


def test_observations_reach_the_receiver_in_order_once(bound: Gateway) -> None:
    with receiver() as engine:
        hl7 = HL7.model_copy(update={"send_to": engine.address, "observation_interval_s": 600.0})
        outbox = Outbox(bound.journal, bound.clock, max_messages=1000, metrics=bound.metrics)
        bound.publisher = ObservationPublisher(outbox, hl7, bound.journal, bound.config.channels)
        sender = OutboxSender(outbox, engine.address, resend_interval_s=1.0)
        for _ in range(30):  # 30 minutes at a 60-s poll: the first, then every 10 minutes
            asyncio.run(bound.tick())
            bound.clock.advance(60.0)  # type: ignore[attr-defined]
        while sender.run_once():
            pass
    observations = [m for m in engine.received if "ORU^R01" in m]
    assert len(observations) == 3
    times = [m.split("\r")[0].split("|")[6] for m in observations]
    assert times == sorted(times)
    assert all("PID|||MRN1" in m for m in observations)
    assert all("157784^MDC_FLOW_FLUID_PUMP^MDC" in m for m in observations)
    assert outbox.backlog() == {}


# -- done when: a whole titer-arm course by HL7 alone ----------------------------------------

DAY_S = 86_400.0
STEP_S = 300.0
#: Morning titers of days 2-7 (mg/dL): the last two at or above the target (no infusion).
MORNING_TITERS = (45.0, 60.0, 75.0, 90.0, 100.0, 110.0)


def _run(gateway: Gateway, seconds: float) -> None:
    """Step the channel and publish, on the ManualClock, as the daemon's tick does."""
    channel = gateway.channels["bed1"]
    end = gateway.clock.monotonic() + seconds
    while gateway.clock.monotonic() < end - 1e-9:
        channel.step()
        if gateway.publisher is not None:
            gateway.publisher.after_cycle(gateway.snapshots(), gateway.clock.wall())
        gateway.clock.advance(STEP_S)  # type: ignore[attr-defined]


def _course(gateway: Gateway, *, order: Any, titer: Any) -> list[tuple[int, float, float]]:
    """A titer-arm course: the order an hour after randomisation, then each morning's titer an
    hour before its day; the days as (day, prescribed, delivered)."""
    randomised_s = gateway.clock.wall() - 3600.0
    order(randomised_s)
    _run(gateway, DAY_S - 3600.0)
    for igm in MORNING_TITERS:
        titer(igm, gateway.clock.wall() - 600.0)
        _run(gateway, DAY_S)
    _run(gateway, 2 * 3600.0)
    return [(d.day, d.prescribed_ml, d.delivered_ml) for d in gateway.journal.days("bed1")]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_whole_titer_course_driven_by_hl7_alone_gives_the_days_typed_in_by_hand(
    tmp_path: Path,
) -> None:
    from gateway.config import OrderConfig
    from gateway.timestamps import format_instant

    waiting_channel = {"id": "bed1", "pump": "modbus+tcp://127.0.0.1:1", "bed": "ICU/12/A"}

    # By hand: the same order and titers through the bedside's own intake.
    typed = model_gateway(tmp_path / "typed", waiting_channel)
    try:
        by_hand = _course(
            typed,
            order=lambda randomised_s: typed.channels["bed1"].submit_order(
                OrderConfig.model_validate_json(
                    '{"arm": "titer", "weight_kg": 70, "igm_mg_dl": 30, "hematocrit": 0.35,'
                    f' "randomised_at": "{format_instant(randomised_s)}",'
                    f' "titer_measured_at": "{format_instant(randomised_s)}"}}',
                    strict=True,
                )
            ),
            titer=lambda igm, drawn_s: typed.channels["bed1"].submit_titer(igm, 0.35, drawn_s),
        )
    finally:
        asyncio.run(typed.shutdown("course over"))

    # By HL7: order in by RGV^O15, titers by ORU^R01, observations out by PCD-01.
    gateway = model_gateway(tmp_path / "hl7", waiting_channel)
    answers: list[str] = []
    try:
        with receiver() as engine, listening(gateway) as address:
            hl7 = HL7.model_copy(update={"send_to": engine.address})
            outbox = Outbox(gateway.journal, gateway.clock, max_messages=100_000)
            queued: list[str] = []  # what the publisher queued, in order
            put = outbox.put

            def recording_put(channel: str, control_id: str, message: str) -> None:
                queued.append(control_id)
                put(channel, control_id, message)

            outbox.put = recording_put  # type: ignore[method-assign]
            gateway.publisher = ObservationPublisher(
                outbox, hl7, gateway.journal, gateway.config.channels
            )
            sender = OutboxSender(outbox, engine.address, resend_interval_s=1.0)
            sender.start()
            try:
                by_hl7 = _course(
                    gateway,
                    order=lambda randomised_s: answers.append(
                        send(address, order_message("ORD", "MRN7", randomised_at_s=randomised_s))
                    ),
                    titer=lambda igm, drawn_s: answers.append(
                        send(
                            address,
                            lab_message(
                                f"LAB{int(igm)}", "MRN7", igm=f"{igm:g}", drawn_at_s=drawn_s
                            ),
                        )
                    ),
                )
                # The sender catches up: a message without an answer yet is due again after
                # the resend interval, on the (manual) clock.
                deadline = time.monotonic() + 60.0
                while outbox.backlog() and time.monotonic() < deadline:
                    gateway.clock.advance(1.0)  # type: ignore[attr-defined]
                    time.sleep(0.05)  # a real thread on real time: poll with a deadline
            finally:
                sender.stop()
            received = list(engine.received)
            backlog = outbox.backlog()
    finally:
        asyncio.run(gateway.shutdown("course over"))

    assert [answer_code(a) for a in answers] == ["AA"] * (1 + len(MORNING_TITERS))
    assert [d for d, _, _ in by_hl7] == [1, 2, 3, 4, 5, 6, 7]
    assert by_hl7 == by_hand
    # Every observation arrived, once, in order, for the bound patient.
    # Delivery is at least once (an answer lost or late under load means a resend): the
    # receiver de-duplicates by MSH-10, as docs/integration.md asks of it.
    control_ids = list(dict.fromkeys(m.split("\r")[0].split("|")[9] for m in received))
    assert len(control_ids) > 7 * 24
    assert backlog == {}
    assert control_ids == queued  # every queued observation arrived, once, in queue order
    assert all("PID|||MRN7" in m for m in received[1:])


# -- the daemon's own wiring -----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_run_listens_for_hl7_and_forwards_observations(tmp_path: Path) -> None:
    """``serve`` as ``run`` starts it: an order by MLLP is taken, observations go out."""
    import time

    from gateway.config import build_config
    from tests.gateway.daemon_thread import running_daemon

    with receiver() as engine:
        config = build_config(
            {
                "state_dir": str(tmp_path / "state"),
                "control": {"poll_interval_s": 0.1},
                "hl7": {
                    "listen": "127.0.0.1:0",
                    "send_to": engine.address,
                    "observation_interval_s": 1.0,
                    "resend_interval_s": 0.2,
                },
                "channels": [{"id": "bed1", "pump": "modbus+tcp://127.0.0.1:1", "bed": "ICU/12/A"}],
            }
        )
        with running_daemon(config) as info:
            randomised_s = time.time() - 600.0
            answer = send(info["hl7"], order_message("ORD1", "MRN7", randomised_at_s=randomised_s))
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and not any(
                "PID|||MRN7" in m for m in engine.received
            ):
                time.sleep(0.05)  # real processes on real time: poll with a deadline
        received = list(engine.received)
    assert answer_code(answer) == "AA", answer
    assert any("PID|||MRN7" in m and "ORU^R01" in m for m in received), received[-1:]
