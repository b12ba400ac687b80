"""Errors that reach the user as one line: what is wrong and how to fix it."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment.

    The CLI prints ``str(err)`` on one line and exits with ``exit_code``;
    no traceback is shown.  Messages name the problem and the fix.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class TargetError(UserError):
    """The server under test cannot be used (unreachable, wrong model, ...)."""

    exit_code = 3


class EngineError(UserError):
    """The embedded engine could not be built or started."""

    exit_code = 4
