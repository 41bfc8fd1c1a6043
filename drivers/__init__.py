"""Pump drivers: one :class:`PumpDriver` interface, backends opened by URL and loaded lazily."""
