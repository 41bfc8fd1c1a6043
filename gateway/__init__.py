"""The infusion gateway: dosing, planning, the hard rate limit, control loop, journal, API, CLI."""
