"""One entry point for serving a pump model over a wire protocol.

>>> server = serve(model, protocol="newera", listen="pty")       # doctest: +SKIP
>>> server.pump_url                                               # doctest: +SKIP
'newera:///dev/pts/7'

The transports live in :mod:`simulator.newera_server` and :mod:`simulator.modbus_server`; both
offer the same small interface, :class:`SimulatorServer`.  pymodbus is imported only when the
Modbus transport is used.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path
from typing import Protocol

from simulator.errors import FaultScriptError, SimulatorError
from simulator.faults import FaultScript, load_fault_script
from simulator.model import PumpModel

#: protocol name -> "module:Class" of its server
SERVERS: dict[str, str] = {
    "newera": "simulator.newera_server:NeweraSimulatorServer",
    "modbus": "simulator.modbus_server:ModbusSimulatorServer",
}


class SimulatorServer(Protocol):
    """What every transport of the software pump offers."""

    @property
    def listening(self) -> str:
        """The pty path a client opens, or ``tcp://HOST:PORT``."""
        ...

    @property
    def pump_url(self) -> str:
        """A URL :func:`drivers.open_pump` accepts for this server."""
        ...

    def start(self) -> None: ...

    def close(self) -> None: ...


def serve(model: PumpModel, *, protocol: str, listen: str) -> SimulatorServer:
    """Start serving ``model`` over ``protocol`` ("newera" or "modbus") on ``listen``."""
    try:
        module_name, class_name = SERVERS[protocol].split(":")
    except KeyError:
        allowed = ", ".join(sorted(SERVERS))
        raise SimulatorError(f"protocol {protocol!r}: must be one of {allowed}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    server: SimulatorServer = cls(model, listen=listen)
    server.start()
    return server


def builtin_scenarios() -> list[str]:
    """Names of the fault scenarios shipped with the simulator."""
    folder = resources.files("simulator") / "scenarios"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_scenario(name_or_path: str) -> FaultScript:
    """A built-in scenario by name (e.g. ``occlusion``) or a fault script file by path."""
    if name_or_path in builtin_scenarios():
        with resources.as_file(
            resources.files("simulator") / "scenarios" / f"{name_or_path}.toml"
        ) as p:
            return load_fault_script(p)
    path = Path(name_or_path)
    if not path.exists():
        names = ", ".join(builtin_scenarios())
        raise FaultScriptError(
            f"--faults {name_or_path!r}: not a file, nor a built-in scenario ({names})"
        )
    return load_fault_script(path)
