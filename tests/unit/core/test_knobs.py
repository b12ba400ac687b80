"""core.knobs: tuning knobs from the environment."""

from __future__ import annotations

import math

import pytest

from infermeter.core.knobs import env_number


@pytest.mark.parametrize(("raw", "kind", "want", "said"), [
    (None, float, 0.3, False), ("inf", float, math.inf, False), ("0", float, 0.0, False),
    ("abc", float, 0.3, True), ("-1", float, 0.3, True), ("nan", float, 0.3, True),
    ("7", int, 7, False), ("2.5", int, 10, True)])
def test_env_number(raw, kind, want, said, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    if raw is None:
        monkeypatch.delenv("INFERMETER_X", raising=False)
    else:
        monkeypatch.setenv("INFERMETER_X", raw)
    default = 0.3 if kind is float else 10
    value = env_number("INFERMETER_X", default, kind)
    assert value == want and type(value) is kind
    err = capsys.readouterr().err
    if said:
        assert err == (f"infermeter: INFERMETER_X={raw!r} is not a number >= 0; using {default:g} "
                       f"(unset it, or give a number such as {default:g})\n")
    else:
        assert err == ""
