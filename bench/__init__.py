"""Speed and memory figures, each beside its peer: ``python -m bench`` (see bench/README.md).

Benchmarks print figures; they are never timed tests.  The modules hold one figure each (or a
family): ``poll_modbus``, ``poll_newera``, ``bench_channels`` (control cycle, journal growth),
``bench_course`` (course speed, journal per channel-day), ``daemon_rss``; ``figures`` is the table.
"""
