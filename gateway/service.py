"""The daemon process: the control loop on a thread of its own, the HTTP API beside it.

Start-up checks everything that can fail *before* anything is journalled: the token files are
read, the API's address is resolved, checked (loopback unless ``api.allow_remote``) and bound;
only then does :class:`~gateway.daemon.Gateway` open the journal and take the order.  A failure
there is one line and exit code 2 (:class:`~gateway.errors.ConfigError`), with nothing written.

The control loop runs its own event loop on its own thread, so no request, however large, slow
or numerous, can delay a control cycle: the API's event loop (the main thread) only reads
snapshots and queues inputs (:meth:`gateway.channel.Channel.submit_order` and friends).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.config import GatewayConfig, Hl7Config, parse_host_port
from gateway.daemon import DriverFactory, Gateway
from gateway.errors import ConfigError, GatewayError
from gateway.listen import reaches_beyond_loopback, resolve_listen
from gateway.tokens import TokenSource

log = structlog.get_logger("gateway.service")

#: Concurrent connections the API serves; more get 503 (a flood costs the API, never control).
API_MAX_CONNECTIONS = 64
#: Seconds an idle keep-alive connection is kept.
API_KEEP_ALIVE_S = 5
#: Largest request head (request line and headers) the API reads, in bytes.
API_MAX_HEAD_BYTES = 16 * 1024


#: How long (s) one thread may hold the interpreter while another waits for it.  Python's
#: default, 5 ms, lets a busy API thread make the control thread wait 5 ms at every blocking
#: call it returns from (journal, pump link); 1 ms keeps a control cycle prompt under a flood.
CONTROL_SWITCH_INTERVAL_S = 0.001


class ControlLoopFailedError(GatewayError):
    """The control loop ended on an error of its own (exit code 1; the log says which)."""

    exit_code = 1


@dataclass(frozen=True)
class BoundApi:
    """The API's listening socket, bound before the journal is opened."""

    sock: socket.socket
    address: str
    #: True when the address is reachable from other machines (``api.allow_remote``).
    remote: bool


def bind_api(listen: str, *, allow_remote: bool) -> BoundApi:
    """Resolve ``listen`` (HOST:PORT), refuse a non-loopback host unless allowed, and bind.

    ConfigError (one line naming ``api.listen``) for an unresolvable host, a remote address
    without ``allow_remote``, or an address that cannot be bound (in use, not this machine's).
    """
    return bind_listener(
        "api.listen",
        listen,
        allow_remote=allow_remote,
        why_local="the API serves patient data and commands, so listening beyond this machine"
        " needs api.allow_remote = true (and a firewall or TLS proxy in front; see"
        " docs/operations.md)",
        flag="--api or api.listen",
    )


def bind_listener(
    setting: str, listen: str, *, allow_remote: bool, why_local: str, flag: str
) -> BoundApi:
    """A listening socket on ``listen`` (HOST:PORT), bound now; see :func:`bind_api`."""
    host, port = parse_host_port(listen, setting)
    infos = resolve_listen(setting, listen, host, port)
    remote = reaches_beyond_loopback(infos)
    if remote and not allow_remote:
        raise ConfigError(f"{setting} {listen!r}: not a loopback address; {why_local}")
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"{setting} {listen!r}: cannot listen there: {exc.strerror or exc} (is another"
            f" gateway or service on that port? choose another port with {flag})"
        ) from None
    bound_host, bound_port = sock.getsockname()[:2]
    address = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
    return BoundApi(sock, address, remote)


def bind_hl7(hl7: Hl7Config | None) -> BoundApi | None:
    """The inbound MLLP socket, if ``[hl7] listen`` is set (bound before the journal opens)."""
    if hl7 is None or hl7.listen is None:
        return None
    return bind_listener(
        "hl7.listen",
        hl7.listen,
        allow_remote=hl7.allow_remote,
        why_local="orders and lab results change doses, so listening beyond this machine needs"
        " hl7.allow_remote = true (and a firewall that admits only the interface engine)",
        flag="hl7.listen",
    )


class Hl7Interface:
    """The hospital interface of one gateway: the MLLP listener and the outbox's sender."""

    def __init__(self, gateway: Gateway, hl7: Hl7Config, bound: BoundApi | None) -> None:
        from gateway.hl7_inbound import InboundHandler
        from gateway.hl7_outbound import ObservationPublisher
        from gateway.hl7_server import MllpListener
        from gateway.outbox import Outbox, OutboxSender

        self.listener = (
            MllpListener(bound.sock, InboundHandler(gateway, hl7).handle) if bound else None
        )
        self.sender: OutboxSender | None = None
        if hl7.send_to is not None:
            outbox = Outbox(
                gateway.journal,
                gateway.clock,
                max_messages=hl7.outbox_max_messages,
                metrics=gateway.metrics,
            )
            gateway.publisher = ObservationPublisher(
                outbox, hl7, gateway.journal, gateway.config.channels
            )
            self.sender = OutboxSender(outbox, hl7.send_to, resend_interval_s=hl7.resend_interval_s)

    async def start(self, info: dict[str, Any]) -> None:
        if self.listener is not None:
            await self.listener.start()
            info["hl7"] = self.listener.address
        if self.sender is not None:
            self.sender.start()

    async def stop(self) -> None:
        """Before the control loop's shutdown closes the journal."""
        if self.listener is not None:
            await self.listener.close()
        if self.sender is not None:
            await asyncio.to_thread(self.sender.stop)


class ControlThread:
    """Runs :meth:`Gateway.run` on its own thread and event loop until :meth:`stop`."""

    def __init__(self, gateway: Gateway, *, on_exit: Callable[[], None] | None = None) -> None:
        self.gateway = gateway
        self.error: BaseException | None = None
        self._on_exit = on_exit
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="control", daemon=False)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # recorded for the main thread, which exits non-zero
            self.error = exc
            log.error("control_loop_failed", error=repr(exc))
        finally:
            self._ready.set()
            if self._on_exit is not None:
                self._on_exit()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self.gateway.run(self._stop)

    def stop(self) -> None:
        """Ask the loop to finish its cycle and shut down (thread-safe, idempotent)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            # RuntimeError: the loop closed meanwhile, so it is stopping already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()


def read_tokens(config: GatewayConfig) -> tuple[TokenSource | None, TokenSource | None]:
    """The API's write and read token sources from the config (None where not configured)."""
    api = config.api
    if api is None:
        return None, None
    write = TokenSource(api.token_file) if api.token_file is not None else None
    read = TokenSource(api.read_token_file) if api.read_token_file is not None else None
    return write, read


async def serve(
    config: GatewayConfig,
    *,
    adopt_config_order: bool = False,
    driver_factory: DriverFactory | None = None,
    on_started: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the daemon until ``stop`` is set (or SIGTERM/SIGINT on the main thread).

    ``on_started`` gets the start-up facts (channels, state_dir, the API's bound address) once
    the API listens and the control loop runs.
    """
    write_token, read_token = read_tokens(config)
    sockets: list[socket.socket] = []
    try:
        bound = (
            bind_api(config.api.listen, allow_remote=config.api.allow_remote)
            if config.api is not None
            else None
        )
        if bound is not None:
            sockets.append(bound.sock)
        hl7_bound = bind_hl7(config.hl7)
        if hl7_bound is not None:
            sockets.append(hl7_bound.sock)
        gateway = Gateway(
            config, adopt_config_order=adopt_config_order, driver_factory=driver_factory
        )
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    hl7 = Hl7Interface(gateway, config.hl7, hl7_bound) if config.hl7 is not None else None
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    def wake() -> None:  # the control loop ended (or failed): the process ends too
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    control = ControlThread(gateway, on_exit=wake)
    info: dict[str, Any] = {
        "channels": list(gateway.channels),
        "state_dir": str(config.state_dir),
        "time_scale": config.time_scale,
        "poll_interval_s": gateway.poll_interval_s,
    }
    # The web stack is imported and the app built before control starts: building pydantic
    # schemas holds the interpreter for long stretches, and no tick should wait for that.
    server = _api_server(gateway, write_token, read_token) if bound is not None else None
    server_task: asyncio.Task[None] | None = None
    sys.setswitchinterval(CONTROL_SWITCH_INTERVAL_S)
    # Everything built so far lives as long as the process: out of the collector's sight, a full
    # collection (which stops every thread) stays short.
    gc.collect()
    gc.freeze()
    control.start()
    try:
        if server is not None and bound is not None:
            server_task = await _start_api(server, bound)
            info["api"] = bound.address
            if bound.remote:
                log.warning(
                    "api_listening_beyond_loopback",
                    listen=bound.address,
                    message="the API is reachable from other machines (api.allow_remote)",
                )
        if hl7 is not None:
            await hl7.start(info)
            if hl7_bound is not None and hl7_bound.remote:
                log.warning("hl7_listening_beyond_loopback", listen=hl7_bound.address)
        log.info("gateway_started", **info)
        if on_started is not None:
            on_started(info)
        await stop.wait()
    finally:
        if server is not None and server_task is not None:
            server.should_exit = True
            await server_task
        if hl7 is not None:
            await hl7.stop()
        control.stop()
        await asyncio.to_thread(control.join)
        for sock in sockets:
            sock.close()
    if control.error is not None:
        raise ControlLoopFailedError(f"the control loop failed: {control.error!r}")
    log.info("gateway_stopped", reason="signal")
    return 0


def _api_server(
    gateway: Gateway, write_token: TokenSource | None, read_token: TokenSource | None
) -> Any:
    import uvicorn

    from gateway.api import create_app

    return uvicorn.Server(
        uvicorn.Config(
            create_app(gateway, write_token, read_token=read_token),
            log_level="warning",
            lifespan="off",
            limit_concurrency=API_MAX_CONNECTIONS,
            timeout_keep_alive=API_KEEP_ALIVE_S,
            h11_max_incomplete_event_size=API_MAX_HEAD_BYTES,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    )


async def _start_api(server: Any, bound: BoundApi) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve(sockets=[bound.sock]))
    while not server.started:
        if task.done():
            await task
            raise ConfigError(f"api.listen {bound.address!r}: the API server did not start")
        await asyncio.sleep(0.01)
    return task
