"""Timing several ways of doing the same thing, fairly: interleaved rounds, median per call.

Each round runs every contender ``per_round`` times back to back, in a rotated order, so drift
(another process waking up, CPU frequency) falls on all of them alike; a contender's figure is
the median over the rounds of its mean time per call.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping


def per_call_s(
    contenders: Mapping[str, Callable[[], object]], *, per_round: int, rounds: int, warmup: int
) -> dict[str, float]:
    """Median seconds per call of each contender."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    gc.collect()
    means: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            call = contenders[name]
            started = time.perf_counter()
            for _ in range(per_round):
                call()
            means[name].append((time.perf_counter() - started) / per_round)
    return {name: statistics.median(values) for name, values in means.items()}
