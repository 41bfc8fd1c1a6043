"""The gateway daemon: channels stepped every poll interval, the API, systemd, metrics.

One asyncio loop.  Every tick steps all channels concurrently (each in a worker thread, since
drivers do blocking I/O), then, only if every cycle completed, tells systemd ``WATCHDOG=1``.

Time comes from the injected clock.  With a :class:`~protocol.clock.ManualClock` (tests, the
demo) a tick *advances* the clock by one poll interval instead of sleeping, so a course runs as
fast as the pump link answers; otherwise the daemon sleeps ``interval / time_scale`` real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import structlog

from drivers import make_pump
from drivers.base import PumpDriver
from gateway.channel import Channel, ChannelState
from gateway.config import GatewayConfig
from gateway.errors import ConfigError
from gateway.journal import Journal, JournalCorruptError
from gateway.metrics import ChannelReadings, GatewayMetrics
from gateway.systemd import Notifier
from protocol.clock import Clock, ManualClock, ScaledClock, SystemClock

log = structlog.get_logger("gateway.daemon")

DriverFactory = Callable[[str], PumpDriver]


class CyclePublisher(Protocol):
    """Told every channel's snapshot after each control cycle (the HL7 observations)."""

    def after_cycle(self, snapshots: Iterable[Mapping[str, Any]], now_s: float) -> int: ...


CLOCK_ANCHOR_KEY = "clock_anchor_wall_s"
TIME_SCALE_KEY = "time_scale"
#: Active alarms that make the daemon not ready: the pump could not be stopped, or the journal
#: could not record.  Matched by string (raised by the channel).
UNREADY_ALARM_CODES = frozenset({"stop_failed", "journal_failed"})
#: A control cycle starting later than this (real seconds) after it was due is logged.
TICK_LATE_WARN_S = 0.05
#: On a manual clock (the demo, HIL benches) ticks follow one another at once: the loop is
#: given a turn (signals, a stop) at least this often in real seconds, not after every tick.
MANUAL_CLOCK_YIELD_S = 0.01


class TimeScaleChangedError(ConfigError):
    """A restart with another ``time_scale`` than the course's journal was started with.

    A course's times (day windows, the clock anchor, the pump watchdog) only mean something on
    one time scale, so the daemon refuses to start rather than reinterpret them (exit code 2).
    """

    exit_code = 2


def check_time_scale(config: GatewayConfig, journal: Journal) -> None:
    """Record ``time_scale`` on a journal's first start; refuse a restart with another one."""
    stored = journal.get_meta(TIME_SCALE_KEY)
    if stored is None:
        journal.set_meta(TIME_SCALE_KEY, repr(config.time_scale))
        return
    try:
        same = float(stored) == config.time_scale
    except ValueError:
        same = False
    if not same:
        raise TimeScaleChangedError(
            f"time_scale: the journal in {journal.state_dir} was started with time_scale"
            f" {stored}, this configuration says {config.time_scale!r}: a course keeps one"
            " time scale (use the original time_scale, or a new state_dir for a new course)"
        )


def clock_for(config: GatewayConfig, journal: Journal) -> Clock:
    """Real time, or real time x ``time_scale`` anchored in the journal across restarts.

    The journal's recorded ``time_scale`` must be the config's (:func:`check_time_scale`).
    """
    check_time_scale(config, journal)
    if config.time_scale == 1.0:
        return SystemClock()
    anchor = journal.get_meta(CLOCK_ANCHOR_KEY)
    clock = ScaledClock(config.time_scale, anchor_wall_s=_stored_anchor_s(journal, anchor))
    if anchor is None:
        journal.set_meta(CLOCK_ANCHOR_KEY, repr(clock.anchor_wall_s))
    return clock


def _stored_anchor_s(journal: Journal, anchor: str | None) -> float | None:
    """The journal's clock anchor (wall s), None before the first start; one that is not a
    time is a damaged journal, refused in one line rather than guessed."""
    if anchor is None:
        return None
    try:
        anchor_s = float(anchor)
    except ValueError:
        anchor_s = math.nan
    if not math.isfinite(anchor_s):
        raise JournalCorruptError(
            f"{journal.path}: {CLOCK_ANCHOR_KEY} {anchor[:40]!r} is not a time: the journal is"
            " damaged (keep it for the investigation; a new state_dir starts a new course)"
        )
    return anchor_s


class Gateway:
    """All channels of one process, their journal, metrics and systemd notifier."""

    #: The threads that step the channels, one per channel (made by the first tick).
    _step_threads: ThreadPoolExecutor | None = None
    #: When (real monotonic s) a run on a manual clock last gave the event loop a turn.
    _yielded_real_s: float = 0.0

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Clock | None = None,
        journal: Journal | None = None,
        driver_factory: DriverFactory | None = None,
        notifier: Notifier | None = None,
        adopt_config_order: bool = False,
        step_in_loop: bool = False,
    ) -> None:
        """``step_in_loop``: step the channels in the event loop's own thread, one after the
        other, instead of one worker thread each.  Only for a loop that serves nothing else
        (the demo: one channel, no API): a cycle then blocks the loop for its pump's round
        trips, and saves the two thread handoffs a worker costs per cycle."""
        self.config = config
        self.step_in_loop = step_in_loop
        self.journal = journal or Journal(config.state_dir)
        try:
            self._setup(config, clock, driver_factory, notifier, adopt_config_order)
        except BaseException:
            if journal is None:  # ours: release the state directory (its lock) on the way out
                self.journal.close()
            raise

    def _setup(
        self,
        config: GatewayConfig,
        clock: Clock | None,
        driver_factory: DriverFactory | None,
        notifier: Notifier | None,
        adopt_config_order: bool,
    ) -> None:
        self.clock = clock or clock_for(config, self.journal)
        self.poll_interval_s = config.effective_poll_interval_s
        self.notifier = notifier or Notifier()
        self.metrics = GatewayMetrics(channel_ids=[c.id for c in config.channels])
        self.started_real_s = time.monotonic()
        self.cycles = 0
        self.last_cycle_ok = False
        #: Queues pump observations for the hospital interface after each cycle (or None).
        self.publisher: CyclePublisher | None = None
        #: How late (real seconds) ticks started against their schedule: the last and the worst.
        self.last_tick_lateness_s = 0.0
        self.last_cycle_real_s = 0.0
        self.max_tick_lateness_s = 0.0
        control = config.control

        def default_factory(url: str) -> PumpDriver:
            # Defaults only: a pump URL's own ?timeout_s=&retries= win (drivers.url).
            defaults = {"timeout_s": control.request_timeout_s, "retries": control.request_retries}
            return make_pump(url, defaults=defaults)

        factory = driver_factory or default_factory
        self.channels: dict[str, Channel] = {}
        for channel_config in config.channels:
            self.channels[channel_config.id] = Channel(
                channel_config,
                factory(channel_config.pump),
                self.journal,
                self.clock,
                control,
                pump_watchdog_s=config.effective_pump_watchdog_s,
                poll_interval_s=self.poll_interval_s,
                adopt_config_order=adopt_config_order,
            )
        self.metrics.read_channels_from(self._channel_readings)
        if config.time_scale != 1.0:
            log.warning(
                "time_scale_active",
                time_scale=config.time_scale,
                poll_interval_s=self.poll_interval_s,
                pump_watchdog_s=config.effective_pump_watchdog_s,
                message="SIMULATED TIME: for hardware-in-loop rigs only, never at a bedside",
            )

    def _channel_readings(self) -> ChannelReadings:
        """What the metrics show of the channels, read when they are scraped (on the API's
        thread): each channel's last published cycle, the link judged against two poll
        intervals on the gateway's clock now."""
        return ChannelReadings(
            gauges=[channel.gauges() for channel in self.channels.values()],
            now_wall_s=self.clock.wall(),
            link_horizon_s=2.0 * self.poll_interval_s,
        )

    # -- one tick --------------------------------------------------------------------------

    async def tick(self) -> bool:
        """Step every channel once; True if every cycle completed."""
        started = time.monotonic()
        if self.step_in_loop:
            self._finish_tick(started, self._step_here())
            return self.last_cycle_ok
        # One thread per channel, all at once: a cycle mostly waits (on its pump, on the
        # journal's fsync, which concurrent cycles share: group commit).  The loop's default
        # executor has min(32, CPUs + 4) threads: on two cores 64 channels would go in waves.
        if self._step_threads is None:
            self._step_threads = ThreadPoolExecutor(
                max_workers=max(len(self.channels), 1), thread_name_prefix="channel"
            )
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._step_threads, contextvars.copy_context().run, channel.step
                )
                for channel in self.channels.values()
            ),
            return_exceptions=True,
        )
        failed = []
        for channel, result in zip(self.channels.values(), results, strict=True):
            if isinstance(result, BaseException):
                failed.append(channel)
                log.error("cycle_failed", channel=channel.id, error=repr(result))
        # Unknown state in our own code: stop those pumps rather than guess (fail safe), all at
        # once (a journal that cannot write fails every channel of the tick together).
        await asyncio.gather(
            *(loop.run_in_executor(self._step_threads, c.driver.stop) for c in failed),
            return_exceptions=True,
        )
        self._finish_tick(started, failed)
        return self.last_cycle_ok

    def _step_here(self) -> list[Channel]:
        """Step every channel in this thread (``step_in_loop``); the channels that failed,
        their pumps told to stop (as :meth:`tick` does with worker threads)."""
        failed = []
        for channel in self.channels.values():
            try:
                channel.step()
            except Exception as exc:
                failed.append(channel)
                log.error("cycle_failed", channel=channel.id, error=repr(exc))
        for channel in failed:
            with contextlib.suppress(Exception):
                channel.driver.stop()
        return failed

    def _finish_tick(self, started: float, failed: list[Channel]) -> None:
        """What every tick ends with: the cycle's outcome, metrics, observations, systemd."""
        ok = not failed
        self.cycles += 1
        self.last_cycle_ok = ok
        self.last_cycle_real_s = time.monotonic() - started
        self.metrics.cycle_done(ok, self.last_cycle_real_s)
        if self.publisher is not None:
            try:
                self.publisher.after_cycle(self.snapshots(), self.clock.wall())
            except Exception as exc:  # the hospital interface never stops control
                log.error("hl7_observation_failed", error=repr(exc))
        if ok:
            self.notifier.ready(status=f"{len(self.channels)} channel(s)")
            self.notifier.watchdog()

    async def run(
        self,
        stop: asyncio.Event,
        *,
        max_ticks: int | None = None,
        until: Callable[[], bool] | None = None,
        after_tick: Callable[[], None] | None = None,
    ) -> None:
        """Tick until ``stop`` is set (or ``max_ticks`` / ``until()``), then shut down.

        ``after_tick`` runs after every tick (the demo's virtual patient and operator).  On real
        (or scaled) time each tick is due one poll interval after the previous one started; how
        late it starts is measured (:attr:`max_tick_lateness_s`, and a metric).
        """
        try:
            due_real_s = time.monotonic()
            while not stop.is_set():
                started_real_s = time.monotonic()
                if not isinstance(self.clock, ManualClock):
                    self._record_lateness(started_real_s - due_real_s)
                await self.tick()
                if after_tick is not None:
                    after_tick()
                if (max_ticks is not None and self.cycles >= max_ticks) or (until and until()):
                    break
                due_real_s = started_real_s + self.poll_interval_real_s
                await self._wait_for_next_tick(due_real_s, stop)
        finally:
            await self.shutdown("stopped")

    @property
    def poll_interval_real_s(self) -> float:
        """Real seconds between tick starts (the poll interval over the time scale)."""
        return self.poll_interval_s / max(self.clock.time_scale, 1e-9)

    def _record_lateness(self, lateness_s: float) -> None:
        lateness_s = max(lateness_s, 0.0)
        self.last_tick_lateness_s = lateness_s
        self.max_tick_lateness_s = max(self.max_tick_lateness_s, lateness_s)
        self.metrics.tick_lateness.observe(lateness_s)
        if lateness_s > TICK_LATE_WARN_S:
            log.warning(
                "tick_late",
                lateness_s=round(lateness_s, 4),
                previous_cycle_real_s=round(self.last_cycle_real_s, 4),
                cycles=self.cycles,
            )

    async def _wait_for_next_tick(self, due_real_s: float, stop: asyncio.Event) -> None:
        if isinstance(self.clock, ManualClock):
            self.clock.advance(self.poll_interval_s)
            now_real_s = time.monotonic()
            if now_real_s - self._yielded_real_s >= MANUAL_CLOCK_YIELD_S:
                self._yielded_real_s = now_real_s
                await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(due_real_s - time.monotonic(), 0.0))

    async def shutdown(self, reason: str) -> None:
        """Journalled, orderly: stop every running pump and close every link."""
        self.notifier.stopping()
        for channel in self.channels.values():
            try:
                await asyncio.to_thread(channel.shutdown, reason)
            except Exception as exc:  # keep shutting the others down
                log.error("shutdown_failed", channel=channel.id, error=repr(exc))
        if self._step_threads is not None:
            self._step_threads.shutdown(wait=False)
            self._step_threads = None
        self.journal.close()

    # -- status ----------------------------------------------------------------------------

    def snapshots(self) -> list[dict[str, Any]]:
        return [channel.snapshot() for channel in self.channels.values()]

    def ready(self) -> tuple[bool, list[str]]:
        """Ready: the last cycle completed, every channel heard its pump recently, and no
        channel has an active alarm in :data:`UNREADY_ALARM_CODES` (a pump that would not
        stop, a journal that cannot record)."""
        problems = []
        if not self.last_cycle_ok:
            problems.append(
                "no completed control cycle yet" if self.cycles == 0 else "last cycle failed"
            )
        horizon = 2.0 * self.poll_interval_s
        now = self.clock.wall()
        for snap in self.snapshots():
            last = snap["last_good_poll_wall_s"]
            if (
                snap["state"] == ChannelState.LINK_LOST.value
                or last is None
                or now - last > horizon
            ):
                problems.append(f"channel {snap['id']}: pump not heard within {horizon:g} s")
            for alarm in snap.get("alarms") or ():
                code = alarm.get("code")
                if code in UNREADY_ALARM_CODES:
                    problems.append(f"channel {snap['id']}: alarm {code}")
        return not problems, problems
