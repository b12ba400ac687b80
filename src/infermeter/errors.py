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


def safe_text(text: object, limit: int | None = None) -> str:
    """``text`` fit for a terminal: one line, every control character (ESC, BEL, CR, LF,
    bidi overrides, ...) replaced by ``?``.  Server strings are data, never escape sequences."""
    s = str(text).replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    return "".join(ch if ch.isprintable() else "?" for ch in s)


# RunSpec fields whose command-line flag is not simply --field-name.
_FLAG_NAMES = {"headers": "--header", "save_generated_text": "--save-detailed", "stream": "--no-stream-response",
               "progress": "--disable-tqdm"}


def user_error_from_validation(exc: Exception, fix: str = "see 'infermeter run --help'") -> UserError:
    """One ``UserError`` for a pydantic ``ValidationError`` (first problem, named by its flag)."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return UserError(f"invalid settings: {exc}", fix)
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ())]
    field = loc[0] if loc else ""
    name = _FLAG_NAMES.get(field, "--" + field.replace("_", "-")) if field else "settings"
    if len(loc) > 1:
        name += "." + ".".join(loc[1:])
    if err.get("type") == "extra_forbidden":
        problem = f"unknown setting {field!r}"
    else:
        value = repr(err.get("input"))
        if len(value) > 60:
            value = value[:60] + "..."
        problem = f"{name} {value}: {err.get('msg', 'invalid')}"
    more = len(errors) - 1
    if more:
        problem += f" (and {more} more problem{'s' if more > 1 else ''})"
    return UserError(problem, fix)


class StorageError(UserError):
    """A result file could not be written (disk full, an I/O error): what was measured is
    printed, the records written so far are kept whole."""

    exit_code = 9
