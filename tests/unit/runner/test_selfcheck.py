"""runner.selfcheck: a point with no reported value has no deviation, never a crash or a 0."""

from __future__ import annotations

import math

from infermeter.runner.selfcheck import _vs


def test_deviation_from_the_injected_value():
    assert _vs(11.0, 10.0) == 0.1
    assert _vs(None, 10.0) is None  # no request succeeded: no mean, so no deviation
    assert math.isnan(_vs(5.0, 0.0))  # nothing injected: no relative deviation
