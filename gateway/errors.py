"""The typed errors of the ``gateway`` package: one root, :class:`GatewayError`."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error raised by the ``gateway`` package."""


class InputError(GatewayError, ValueError):
    """A bad external input: names the field, the allowed range and what was given.

    Raised before anything is changed, so a refused input changes nothing.
    """

    def __init__(self, field: str, allowed: str, value: object) -> None:
        self.field = field
        self.allowed = allowed
        self.value = value
        super().__init__(f"{field}: must be {allowed} (got {value!r})")


class ConfigError(GatewayError):
    """A configuration file or setting that cannot be used; the message names the key."""
