"""Shared test set-up: hypothesis profiles, and a guard that fails tests leaving threads behind."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, settings

#: The hazard marker's checks and the results ``python -m tests.trace`` reads (docs/safety.md).
pytest_plugins = ["tests.hazard_plugin"]

# Deadlines measure the machine, not the code: CI runs on 2 shared cores.
settings.register_profile("default", deadline=None)
settings.register_profile(
    "ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

#: Threads that may outlive a test: started by libraries once per process, never ours.
_PROCESS_THREADS = (
    "asyncio_",
    "ThreadPoolExecutor",
    "pytest_timeout",
    "Dummy",
    "AnyIO worker thread",  # anyio's idle pool threads (a TestClient's), ended by anyio itself
)


# The simulated pump of the plugin's fixtures (simulator/pytest_plugin.py): each test module
# says what it needs by overriding these knobs; the --sim-* options are for a user's own suite and
# never change the project's tests.  None: the model's or the protocol's own default.


@pytest.fixture
def sim_protocol() -> str:
    return "newera"


@pytest.fixture
def sim_listen() -> None:
    return None


@pytest.fixture
def sim_max_rate_ml_per_h() -> None:
    return None


@pytest.fixture
def sim_reservoir_ml() -> None:
    return None


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Commands run in-process (``run``, ``demo``) configure structlog for the process, onto
    the test's captured stderr: put the session's configuration back after every test."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves one of its threads running (servers, relays, pollers)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        leftover = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(_PROCESS_THREADS)
        ]
        if not leftover or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # waiting for a thread the test already told to stop
    assert not leftover, f"test left threads running: {[t.name for t in leftover]}"
