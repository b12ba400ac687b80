"""Errors that reach the user as one line: what is wrong and how to fix it."""

from __future__ import annotations

from typing import Callable


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


class FieldError(UserError):
    """A bad value of one setting, named by its field path (``load.num_prompts``), not by how a
    user spelt it.  ``problem`` and ``fix`` are templates: ``{load.num_prompts}`` stands for a
    setting's name, ``{value}`` (and any ``figures``) for values.  ``str(err)`` names the field
    paths; ``worded(name)`` names them as a user wrote them (the CLI: flags; a spec file: keys)."""

    def __init__(self, field: str, value: object, problem: str, fix: str | None = None,
                 **figures: object) -> None:
        self.field, self.value, self.figures = field, value, figures
        self.templates = (problem, fix)
        super().__init__(*self._word(lambda path: path))

    def _word(self, name: Callable[[str], str]) -> tuple[str, str | None]:
        names = _Names(name, {"value": self.value, **self.figures})
        problem, fix = self.templates
        return problem.format_map(names), (fix.format_map(names) if fix is not None else None)

    def worded(self, name: Callable[[str], str], fix: str | None = None) -> UserError:
        """The same error, each field path replaced by ``name(path)`` (``fix`` where it has none)."""
        problem, own_fix = self._word(name)
        err = UserError(problem, own_fix if own_fix is not None else fix)
        err.exit_code = self.exit_code
        return err

    def __reduce__(self):  # crosses process boundaries (worker processes) whole
        return (_field_error, (self.field, self.value, *self.templates, self.figures))


def _field_error(field, value, problem, fix, figures) -> FieldError:
    return FieldError(field, value, problem, fix, **figures)


class _Names(dict):
    """``format_map`` mapping: ``{section.field}`` -> a setting's name, other keys -> values."""

    def __init__(self, name: Callable[[str], str], values: dict[str, object]) -> None:
        super().__init__(values)
        self.name = name

    def __missing__(self, section: str) -> "_Section":
        return _Section(section, self.name)


class _Section:
    def __init__(self, section: str, name: Callable[[str], str]) -> None:
        self.section, self.name = section, name

    def __getattr__(self, attr: str) -> str:
        return self.name(f"{self.section}.{attr}")


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


def user_error_from_validation(exc: Exception, fix: str = "see 'infermeter run --help'") -> UserError:
    """One ``UserError`` for a pydantic ``ValidationError`` (first problem, named ``--field-name``)."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return UserError(f"invalid settings: {exc}", fix)
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ())]
    field = loc[0] if loc else ""
    name = "--" + field.replace("_", "-") if field else "settings"
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
