"""The hospital's side of the HL7 interface, for tests: messages as a lab or a CPOE would send
them, the third-party ``hl7`` library's MLLP client to send them, and its MLLP server to receive
what the gateway sends.  None of this is the project's code under test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import hl7  # type: ignore[import-untyped, unused-ignore]
from hl7.mllp import open_hl7_connection, start_hl7_server  # type: ignore[import-untyped, unused-ignore]


def dtm(unix_s: float) -> str:
    """An HL7 DTM with its UTC offset."""
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y%m%d%H%M%S+0000")


def lab_message(
    control_id: str,
    patient_id: str,
    *,
    igm: str = "30",
    igm_unit: str = "mg/dL",
    hematocrit: str = "0.35",
    hematocrit_unit: str = "L/L",
    drawn_at_s: float | None,
    status: str = "F",
) -> str:
    """An ORU^R01 from the lab: one IgM and one hematocrit (OBX-14 the draw time)."""
    when = dtm(drawn_at_s) if drawn_at_s is not None else ""
    segments = [
        f"MSH|^~\\&|LAB|HOSP-LAB|IGM-GATEWAY|ICU|{when}||ORU^R01^ORU_R01|{control_id}|P|2.6",
        f"PID|1||{patient_id}^^^HOSP^MR||Doe^Jane",
        "OBR|1|ORD1^CPOE|LAB1^LAB|IGMHCT^IgM and hematocrit^L",
        f"OBX|1|NM|2472-0^IgM^LN||{igm}|{igm_unit}^{igm_unit}^UCUM|||||{status}|||{when}",
        f"OBX|2|NM|4544-3^Hct^LN||{hematocrit}|{hematocrit_unit}^{hematocrit_unit}^UCUM"
        f"|||||{status}|||{when}",
    ]
    return "\r".join(segments) + "\r"


def order_message(
    control_id: str,
    patient_id: str,
    *,
    bed: str = "ICU^12^A",
    arm_code: str = "IGMFAT-TITER",
    product_code: str = "IGM-ENRICHED-IG-50",
    weight_kg: str = "70",
    randomised_at_s: float | None,
    igm: str | None = "30",
    hematocrit: str | None = "0.35",
    drawn_at_s: float | None = None,
    rate_ml_per_h: str = "",
) -> str:
    """An IHE PCD-03 RGV^O15 for the trial's product, arm, weight and baseline titer."""
    rand = dtm(randomised_at_s) if randomised_at_s is not None else ""
    drawn = dtm(drawn_at_s) if drawn_at_s is not None else rand
    rate = f"|{rate_ml_per_h}|265266^MDC_DIM_MILLI_L_PER_HR^MDC" if rate_ml_per_h else ""
    segments = [
        f"MSH|^~\\&|CPOE|HOSP|IGM-GATEWAY|ICU|{rand}||RGV^O15^RGV_O15|{control_id}|P|2.6|||AL|AL",
        f"PID|||{patient_id}^^^HOSP^MR||Doe^Jane",
        f"PV1||I|{bed}",
        f"ORC|NW|ORD-{control_id}^CPOE",
        f"RXG|1|||{product_code}^IgM-enriched immunoglobulin^99IGM||||||||||{rate}",
        f"OBX|1|NM|29463-7^Body weight^LN||{weight_kg}|kg^kg^UCUM|||||F|||{rand}",
        f"OBX|2|CWE|IGMFAT-ARM^Trial arm^99IGM||{arm_code}^Arm^99IGM||||||F",
    ]
    if randomised_at_s is not None:
        segments.append(f"OBX|3|DTM|IGMFAT-RAND^Randomisation time^99IGM||{rand}||||||F")
    if igm is not None:
        segments.append(f"OBX|4|NM|2472-0^IgM^LN||{igm}|mg/dL^mg/dL^UCUM|||||F|||{drawn}")
    if hematocrit is not None:
        segments.append(f"OBX|5|NM|4544-3^Hct^LN||{hematocrit}|L/L^L/L^UCUM|||||F|||{drawn}")
    return "\r".join(segments) + "\r"


def send(address: str, text: str, timeout_s: float = 10.0) -> str:
    """Send one message (any text: the gateway must answer even garbage) in one MLLP block with
    the ``hl7`` library's client; the answer's text."""

    async def exchange() -> str:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.wait_for(open_hl7_connection(host, int(port)), timeout_s)
        try:
            writer.writeblock(text.encode("utf-8"))
            await writer.drain()
            answer = await asyncio.wait_for(reader.readblock(), timeout_s)
            return bytes(answer).decode("utf-8")
        finally:
            writer.close()
            await writer.wait_closed()

    return asyncio.run(exchange())


def unescape(text: str) -> str:
    """HL7's delimiter escapes read back (for checking an answer's text)."""
    for escaped, plain in (("\\F\\", "|"), ("\\S\\", "^"), ("\\T\\", "&"), ("\\R\\", "~")):
        text = text.replace(escaped, plain)
    return text.replace("\\E\\", "\\")


def answer_code(answer: str) -> str:
    """MSA-1 of an answer."""
    message = hl7.parse(answer)
    return str(message.segment("MSA")[1])


class Receiver:
    """The interface engine: the ``hl7`` library's MLLP server, answering every message."""

    def __init__(self, answer: str = "CA", port: int = 0) -> None:
        self.answer = answer
        self.port = port
        self.received: list[str] = []
        self.address = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="hl7-receiver")

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        async def connected(reader: Any, writer: Any) -> None:
            try:
                while not reader.at_eof():
                    message = await reader.readmessage()
                    self.received.append(str(message))
                    control_id = str(message.segment("MSH")[10])
                    writer.writemessage(
                        hl7.parse(
                            f"MSH|^~\\&|ENGINE|HOSP|IGM-GATEWAY|ICU|||ACK^R01^ACK|A{control_id}"
                            f"|P|2.6\rMSA|{self.answer}|{control_id}\r"
                        )
                    )
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await start_hl7_server(connected, "127.0.0.1", self.port)
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        async with server:
            await self._stop.wait()

    def start(self) -> Receiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@contextmanager
def receiver(answer: str = "CA", port: int = 0) -> Iterator[Receiver]:
    engine = Receiver(answer, port).start()
    try:
        yield engine
    finally:
        engine.stop()
