"""The one interface the gateway knows a pump by: :class:`PumpDriver`.

The base class owns what every backend shares (python-can's ``BusABC`` is the model):

* a per-request timeout and bounded retries of requests that are safe to repeat;
* reconnection after a lost link, on the next request;
* alarms that are never lost: every alarm any reply carries is latched until cleared;
* rates accepted only as :class:`~drivers.approved_rate.ApprovedRate`, read back after sending;
* ``close()`` safe to call twice, and a context manager.

A backend fills in the small ``_hooks`` below; it raises the typed errors of
:mod:`drivers.errors` and never leaks an ``OSError`` or a codec error.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from drivers.approved_rate import ApprovedRate
from drivers.errors import DriverError, LinkLostError, PumpProtocolError, PumpTimeoutError
from drivers.status import PumpIdentity, PumpStatus, RateReadback
from drivers.url import FiniteNumber, PumpUrl, WholeNumber, parse_options, parse_pump_url
from protocol.pump_state import PumpAlarm

T = TypeVar("T")


class DriverOptions(BaseModel):
    """Options every backend takes, from the URL query or keyword arguments.

    Every field is bounded; numbers are finite, whole-number fields take no fractions or bools
    (:data:`~drivers.url.WholeNumber`, :data:`~drivers.url.FiniteNumber`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Seconds to wait for each reply (real time: the link does not run on a simulated clock).
    timeout_s: FiniteNumber = Field(default=1.0, gt=0.0, le=30.0)
    #: Extra attempts for a request that is safe to repeat (reads, setpoints, stop).
    retries: WholeNumber = Field(default=2, ge=0, le=5)


class PumpDriver(ABC):
    """A connection to one pump.  Thread-safe: one request at a time."""

    #: The options model of the backend (a subclass of :class:`DriverOptions`).
    options_model: ClassVar[type[DriverOptions]] = DriverOptions

    def __init__(self, url: PumpUrl | str, **overrides: object) -> None:
        self.url = parse_pump_url(url) if isinstance(url, str) else url
        self.options: DriverOptions = parse_options(self.options_model, self.url, overrides)
        self._lock = threading.RLock()
        self._connected = False
        self._closed = False
        self._identity: PumpIdentity | None = None
        self._latched_alarms: set[PumpAlarm] = set()

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> PumpIdentity:
        """Connect and identify the pump; refuses a pump this backend does not support."""
        with self._lock:
            if self._closed:
                raise LinkLostError(f"{self.url.redacted()}: driver is closed")
            return self.identify()

    def close(self) -> None:
        """Release the port or socket.  Safe to call more than once."""
        with self._lock:
            self._closed = True
            self._drop_link()

    def __enter__(self) -> PumpDriver:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def identity(self) -> PumpIdentity | None:
        """The identity read at open, or None before."""
        return self._identity

    @property
    def connected(self) -> bool:
        return self._connected

    # -- requests ------------------------------------------------------------------------

    def identify(self) -> PumpIdentity:
        """Ask the pump what it is (and check this backend supports it)."""
        identity = self._request(self._identify, retry=True)
        self._identity = identity
        return identity

    def read_status(self) -> PumpStatus:
        """One poll.  ``alarms`` holds every alarm latched since :meth:`clear_alarms`."""
        status = self._request(self._read_status, retry=True)
        with self._lock:
            self._latch(status.alarms)
            latched, identity = self._latched_alarms, self._identity
            # The backend's status is already the answer when it carries exactly the latched
            # alarms (a frozenset) and the identity: no second status per poll in the usual
            # case, nothing latched (docs/performance.md).
            if (
                type(status) is PumpStatus
                and type(status.alarms) is frozenset
                and status.alarms == latched
                and status.identity is identity
            ):
                return status
            alarms = frozenset(latched)
        return PumpStatus(
            state=status.state,
            rate_ml_per_h=status.rate_ml_per_h,
            volume_infused_ml=status.volume_infused_ml,
            volume_resolution_ml=status.volume_resolution_ml,
            vtbi_remaining_ml=status.vtbi_remaining_ml,
            alarms=alarms,
            measured_rate_ml_per_h=status.measured_rate_ml_per_h,
            max_rate_ml_per_h=status.max_rate_ml_per_h,
            identity=identity,
            uptime_s=status.uptime_s,
        )

    def set_rate(self, rate: ApprovedRate) -> RateReadback:
        """Send an approved rate (rounded down by the codec), then read back what the pump holds."""
        if not isinstance(rate, ApprovedRate):
            raise TypeError("set_rate takes only an ApprovedRate from gateway.safety.check_rate")
        if not 0.0 <= rate.rate_ml_per_h <= rate.ceiling_ml_per_h:  # belt and braces
            raise ValueError(f"rate {rate.rate_ml_per_h} is outside its approval")
        sent = self._request(lambda: self._write_rate(rate.rate_ml_per_h), retry=True)
        if sent > rate.rate_ml_per_h:  # a codec that rounds up is a bug: refuse to continue
            self._request(self._stop, retry=True)
            raise PumpProtocolError(f"encoder rounded {rate.rate_ml_per_h} up to {sent}; stopped")
        readback = self._request(self._read_rate, retry=True)
        resolution = self._identity.rate_resolution_ml_per_h if self._identity else 0.01
        return RateReadback(
            approved_ml_per_h=rate.rate_ml_per_h,
            sent_ml_per_h=sent,
            readback_ml_per_h=readback,
            resolution_ml_per_h=self._rate_resolution_ml_per_h(sent, resolution),
        )

    def set_vtbi(self, volume_ml: float) -> float:
        """Set the volume to be infused (0 = continuous); returns what the pump holds (mL)."""
        if not volume_ml >= 0.0 or volume_ml == float("inf"):
            raise ValueError(f"volume_ml must be finite and >= 0, got {volume_ml!r}")
        return self._request(lambda: self._write_vtbi(volume_ml), retry=True)

    def start(self) -> None:
        """Start infusing at the current setpoint.  Not retried: a lost reply is re-polled."""
        self._request(self._start, retry=False)

    def stop(self) -> None:
        """Stop infusing.  Retried: stopping twice is safe."""
        self._request(self._stop, retry=True)

    def clear_alarms(self) -> None:
        """Clear alarms on the pump and the driver's latch (after an operator acknowledged)."""
        self._request(self._clear_alarms, retry=True)
        with self._lock:
            self._latched_alarms.clear()

    def clear_totals(self) -> None:
        """Zero the pump's volume-infused totalizer."""
        self._request(self._clear_totals, retry=False)

    def arm_watchdog(self, timeout_s: float) -> float:
        """Put the pump in its own communication watchdog; returns the timeout the pump reports
        holding afterwards (s), read back from it, not the one requested: 0 means the pump did
        not take it."""
        if not timeout_s > 0.0 or timeout_s == float("inf"):
            raise ValueError(f"timeout_s must be finite and > 0, got {timeout_s!r}")
        return self._request(lambda: self._arm_watchdog(timeout_s), retry=True)

    # -- the shared mechanism ------------------------------------------------------------

    def _request(self, operation: Callable[[], T], *, retry: bool) -> T:
        attempts = 1 + (self.options.retries if retry else 0)
        with self._lock:
            last: DriverError | None = None
            for _ in range(attempts):
                if self._closed:
                    raise LinkLostError(f"{self.url.redacted()}: driver is closed")
                try:
                    if not self._connected:
                        self._connect_checked()
                    return operation()
                except LinkLostError as exc:
                    self._drop_link()
                    last = exc
                except (PumpTimeoutError, PumpProtocolError) as exc:
                    last = exc
                    self._after_failed_request()
            assert last is not None
            raise last

    def _connect_checked(self) -> None:
        try:
            self._connect()
        except DriverError:
            raise
        except OSError as exc:
            raise LinkLostError(f"{self.url.redacted()}: cannot open: {exc}") from exc
        self._connected = True

    def _drop_link(self) -> None:
        if self._connected:
            self._connected = False
            with contextlib.suppress(OSError, DriverError):  # the link is gone already
                self._disconnect()

    def _latch(self, alarms: Iterable[PumpAlarm]) -> None:
        """Backends call this for every alarm any reply carries, so none is lost."""
        with self._lock:
            self._latched_alarms.update(alarms)

    def _after_failed_request(self) -> None:
        """Hook: discard what a late or garbled reply left behind (e.g. flush input)."""
        return None

    def _rate_resolution_ml_per_h(self, rate_ml_per_h: float, default: float) -> float:
        """Hook: the pump's rate step near ``rate_ml_per_h`` (NE-1000: depends on units)."""
        return default

    # -- backend hooks -------------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> None:
        """Open the port or socket (raise LinkLostError or OSError on failure)."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Close the port or socket."""

    @abstractmethod
    def _identify(self) -> PumpIdentity:
        """Read the identity; raise UnsupportedPumpError for a pump this backend cannot drive."""

    @abstractmethod
    def _read_status(self) -> PumpStatus:
        """Read state, rate, totalizer, VTBI remaining and alarms."""

    @abstractmethod
    def _write_rate(self, rate_ml_per_h: float) -> float:
        """Send a rate, encoded rounding down; return the rate actually sent (mL/h)."""

    @abstractmethod
    def _read_rate(self) -> float:
        """Read back the rate setpoint the pump holds (mL/h)."""

    @abstractmethod
    def _write_vtbi(self, volume_ml: float) -> float:
        """Set the volume to be infused; return what the pump holds (mL)."""

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _stop(self) -> None: ...

    @abstractmethod
    def _clear_alarms(self) -> None: ...

    @abstractmethod
    def _clear_totals(self) -> None: ...

    @abstractmethod
    def _arm_watchdog(self, timeout_s: float) -> float:
        """Arm the pump's own communication watchdog; return the timeout it holds (s)."""
