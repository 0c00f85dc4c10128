"""Timing jobs in interleaved rounds, so that the machine's noise hits every job alike."""

from __future__ import annotations

import statistics
import time

# between timed jobs: onnxruntime's and OpenBLAS's idle threads spin-wait for a while after a run,
# and would otherwise slow whichever job comes next
SETTLE_S = 0.05


def interleaved_medians(jobs: dict, runs: int) -> dict:
    """{name: the median seconds of ``jobs[name]()``} over ``runs`` rounds that run every job once
    each, after two warm-up calls of each (sessions, plans, weight parts)."""
    for job in jobs.values():
        job(), job()
    times = {name: [] for name in jobs}
    for _ in range(runs):
        for name, job in jobs.items():
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}
