"""GPU energy over the measured window, from the samples alone and never extrapolated.

Two ways, in this order:

``energy-counter``  the driver's cumulative energy counter (NVML
                    ``nvmlDeviceGetTotalEnergyConsumption``, amdsmi's energy accumulator,
                    amd-smi's ``total_energy_consumption``, DCGM's
                    ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``): its value at the window's end
                    minus its value at the start, each interpolated between the two samples
                    around that edge.
``power-integral``  the trapezoid integral of the sampled power over the window, the
                    edges interpolated the same way.

Either needs samples on both sides of each edge (a sample at or before the start and one
at or after the end) and no missing samples in between: a gap between consecutive
samples longer than ``GAP_INTERVALS`` sampling intervals and at least ``GAP_MIN_S``
seconds is missing data.  Where that does not hold the energy is n/a with the reason,
never a guess (no mean power stretched over an unsampled stretch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

GAP_INTERVALS = 2.5
GAP_MIN_S = 1.0

Points = Sequence[tuple[float, float]]


@dataclass
class WindowEnergy:
    joules: float | None
    method: str | None  # "energy-counter" | "power-integral" | None (n/a)
    reason: str | None = None  # why it is n/a (or why the counter was passed over)


def typical_interval(points: Points) -> float | None:
    """The median spacing of a series (the sampler's interval, when it is not known)."""
    gaps = sorted(b[0] - a[0] for a, b in zip(points, points[1:]) if b[0] > a[0])
    return gaps[len(gaps) // 2] if gaps else None


def _used(points: Points, start: float, end: float) -> list[tuple[float, float]] | str:
    """The samples the window needs (the last at/before start, those inside, the first at/after
    end), or why the series cannot give the window without extrapolating."""
    pts = sorted(points)
    if not pts:
        return "no samples"
    before = [p for p in pts if p[0] <= start]
    after = [p for p in pts if p[0] >= end]
    if not before:
        return f"the first sample is {pts[0][0] - start:.2f} s after the window's start (not extrapolated)"
    if not after:
        return f"the last sample is {end - pts[-1][0]:.2f} s before the window's end (not extrapolated)"
    return [before[-1], *[p for p in pts if start < p[0] < end], after[0]]


def _gap(used: list[tuple[float, float]], interval: float | None) -> str | None:
    """The first gap: longer than GAP_INTERVALS intervals and at least GAP_MIN_S seconds."""
    for (t0, _), (t1, _) in zip(used, used[1:]):
        dt = t1 - t0
        if dt >= GAP_MIN_S and (not interval or dt > GAP_INTERVALS * interval):
            every = f"sampled every {interval:g} s" if interval else "sampling interval unknown"
            return (f"samples missing: a {dt:.2f} s gap ({every}; a gap is over {GAP_INTERVALS:g} intervals "
                    f"and at least {GAP_MIN_S:g} s)")
    return None


def _at(a: tuple[float, float], b: tuple[float, float], t: float) -> float:
    (t0, v0), (t1, v1) = a, b
    return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def _value_at(used: list[tuple[float, float]], t: float) -> float:
    for a, b in zip(used, used[1:]):
        if a[0] <= t <= b[0]:
            return _at(a, b, t)
    return used[-1][1]


def counter_energy(points: Points, start: float, end: float, interval: float | None) -> WindowEnergy:
    used = _used(points, start, end)
    if isinstance(used, str):
        return WindowEnergy(None, None, f"energy counter: {used}")
    gap = _gap(used, interval)
    if gap:
        return WindowEnergy(None, None, f"energy counter: {gap}")
    if any(b[1] < a[1] for a, b in zip(used, used[1:])):
        return WindowEnergy(None, None, "energy counter: went backwards in the window (driver reloaded?)")
    return WindowEnergy(_value_at(used, end) - _value_at(used, start), "energy-counter")


def power_energy(points: Points, start: float, end: float, interval: float | None) -> WindowEnergy:
    used = _used(points, start, end)
    if isinstance(used, str):
        return WindowEnergy(None, None, f"power: {used}")
    gap = _gap(used, interval)
    if gap:
        return WindowEnergy(None, None, f"power: {gap}")
    clipped = [(start, _value_at(used, start)), *[p for p in used if start < p[0] < end],
               (end, _value_at(used, end))]
    joules = sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(clipped, clipped[1:]))
    return WindowEnergy(joules, "power-integral")


def window_energy(energy: Points, power: Points, start: float, end: float, *,
                  interval: float | None = None) -> WindowEnergy:
    """Joules in [start, end]: the counter where it gives the window, else the power
    integral, else n/a with the reasons.  ``interval``: the sampler's interval in seconds
    (None: the series' median spacing)."""
    if not end > start:
        return WindowEnergy(None, None, "the window is empty")
    reasons = []
    if energy:
        got = counter_energy(energy, start, end, interval or typical_interval(energy))
        if got.method:
            return got
        reasons.append(got.reason or "")
    if power:
        got = power_energy(power, start, end, interval or typical_interval(power))
        if got.method:
            got.reason = reasons[0] if reasons else None  # why the counter was not used
            return got
        reasons.append(got.reason or "")
    if not energy and not power:
        reasons.append("the GPU sampler reports neither an energy counter nor power")
    return WindowEnergy(None, None, "; ".join(reasons))
