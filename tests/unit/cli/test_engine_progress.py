"""cli.engine_progress: one line with an ETA on a terminal, a line per tenth in a log."""

from __future__ import annotations

import io

from rich.console import Console

from infermeter.cli.engine_progress import EngineProgress, eta_text


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_from_the_rate_so_far():
    assert eta_text(50, 200, 100.0) == "5m00s left"  # 2 s a step, 150 steps left
    assert eta_text(190, 200, 95.0) == "5s left"
    assert eta_text(2, 200, 10.0) == "" and eta_text(200, 200, 10.0) == ""


def test_a_log_gets_a_line_per_phase_and_per_tenth_of_the_compile():
    out = io.StringIO()
    clock = Clock()
    p = EngineProgress(Console(file=out, force_terminal=False, width=200), clock=clock, dim=False)
    p("download", None, None)
    p("configure", None, None)
    for i in range(1, 207):
        clock.t += 1.0
        p("compile", i, 206)
    p("done", None, None)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["engine: download", "engine: configure"]
    compile_lines = [line for line in lines if line.startswith("engine: compile")]
    assert len(compile_lines) == 11  # 0 %, 10 %, ..., 100 %: not 206 lines
    assert "(50 %)" in compile_lines[5] and "left" in compile_lines[5]


def test_a_terminal_gets_one_line_updated_in_place():
    out = io.StringIO()
    clock = Clock()
    p = EngineProgress(Console(file=out, force_terminal=True, width=200), clock=clock, dim=False)
    for i in range(1, 11):
        clock.t += 2.0
        p("compile", i, 10)
    p("done", None, None)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r\x1b[2K") == 10
    assert "engine: compile 5/10 (50 %), 8s left" in text  # 8 s for 5 steps since the first
