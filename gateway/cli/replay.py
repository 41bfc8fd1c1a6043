"""``infusion-gateway replay FILE``: a wire recording served as the pump that was recorded.

    infusion-gateway replay bed-4.jsonl [--listen pty|tcp://127.0.0.1:0]

The recording is made with the ``record=FILE`` pump URL option or ``pump ... --record FILE``
(docs/record-replay.md).  Each request that matches the next recorded one gets the recorded reply
bytes; one that does not is logged on stderr (``replay_mismatch``, expected and received bytes in
hex) and answered with nothing (NE-1000) or Modbus exception 04.  Runs until SIGINT/SIGTERM.

stdout: the first line is one JSON object ``{"listening": ..., "pump_url": ...}`` (flushed at
once); the last line the summary ``{"exchanges", "replayed", "mismatches", "complete"}``.  Exit
code 0 when every recorded exchange was replayed and nothing mismatched, 1 otherwise; 2 for a
recording that is corrupt or truncated (the message names the line and the field).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from types import FrameType

from gateway.cli.sim import check_listen_address
from gateway.errors import ConfigError, InputError

#: Real seconds between looks at the stop flag (a signal sets it).
_WAKE_S = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", type=Path, metavar="FILE", help="a wire recording (.jsonl)")
    parser.add_argument(
        "--listen",
        default=None,
        help="pty, or tcp://HOST:PORT (port 0: any free); default: the kind of line it was "
        "recorded on (a pty for newera:// and modbus+rtu://, tcp://127.0.0.1:0 otherwise)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="let --listen use a non-loopback address",
    )


def run(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from protocol.recording import RecordingFormatError
    from simulator.replay import DEFAULT_LISTEN, ReplayServer, load_recording

    try:
        recording = load_recording(args.recording)
    except RecordingFormatError as exc:
        raise ConfigError(f"{args.recording}: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(
            "FILE", f"a readable wire recording ({reason})", str(args.recording)
        ) from None
    listen = args.listen or DEFAULT_LISTEN[recording.header.protocol]
    if not (listen == "pty" or listen.startswith("tcp://")):
        raise InputError("--listen", "pty or tcp://HOST:PORT", listen)
    if listen != "pty":
        check_listen_address(listen, allow_remote=args.allow_remote)
    configure_logging()  # mismatches go to stderr; stdout stays JSON
    try:
        server = ReplayServer(recording, listen=listen)
    except ValueError as exc:
        raise InputError("--listen", str(exc).removeprefix("listen: "), listen) from None
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"--listen {listen!r}: cannot listen there: {exc}") from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(
            json.dumps(
                {
                    "listening": server.listening,
                    "pump_url": server.pump_url,
                    "recording": str(args.recording),
                    "protocol": recording.header.protocol,
                    "exchanges": len(server.session.exchanges),
                }
            ),
            flush=True,
        )
        while not stop.wait(_WAKE_S):
            pass
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = server.session.summary()
    print(json.dumps(summary), flush=True)
    return 0 if summary["complete"] and not summary["mismatches"] else 1
