"""Reading an experiment spec file: YAML with duplicate keys refused, validation
errors worded as key paths with line numbers, and every cell's RunSpec checked
before anything runs.  The models themselves are in ``experiments/spec.py``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from infermeter.errors import FieldError, UserError
from infermeter.experiments.cells import build_plan, runspec_from_settings
from infermeter.experiments.spec import (
    SPEC_DOC,
    ExperimentSpec,
    RunOptions,
    StopRules,
    TargetSpec,
    WorkloadSpec,
)


class _DuplicateKey(Exception):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line, self.problem = line, problem


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue
        if key in seen:
            raise _DuplicateKey(key_node.start_mark.line + 1,
                                f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping_orig(node, deep=deep)  # type: ignore[attr-defined]


_UniqueKeyLoader.construct_mapping_orig = yaml.SafeLoader.construct_mapping  # type: ignore[attr-defined]
_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as exc:
        raise UserError(f"{source}:{exc.line}: {exc.problem}", "keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: not valid YAML: {what}", "fix the YAML syntax (indentation, colons, quotes)") from None


def load_spec(path: str | Path) -> tuple["ExperimentSpec", str]:
    """Read and validate a spec file; returns the spec and its text."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"spec file {str(p)!r} does not exist",
                        "give the path of a YAML experiment spec (or --recipe NAME)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read spec file {str(p)!r}: {exc}", "give a readable UTF-8 YAML file") from None
    return parse_spec(text, source=str(p)), text


def parse_spec(text: str, source: str = "spec") -> "ExperimentSpec":
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise UserError(f"{source}: the spec must be a YAML mapping (name:, targets:, workloads:, load: ...)",
                        SPEC_DOC)
    return spec_from_data(data, source, text)


def spec_from_data(data: dict, source: str = "spec", text: str | None = None) -> "ExperimentSpec":
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise user_error_from_spec_validation(exc, source, text) from None
    check_run_specs(spec, source)
    return spec


def _line_of(text: str | None, loc: tuple) -> int | None:
    """The 1-based line of the deepest node of ``loc`` that the YAML text has."""
    if not text:
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _allowed_keys(loc: tuple) -> list[str]:
    """Keys the model at ``loc`` (a dotted path into ExperimentSpec) accepts."""
    model: Any = ExperimentSpec
    i = 0
    parts = list(loc)
    while i < len(parts):
        fields = model.model_fields
        name = parts[i]
        if name not in fields:
            return list(fields)
        ann = fields[name].annotation
        nxt = _model_in(ann)
        if nxt is None:
            return []
        if name in ("targets", "workloads"):
            i += 1  # skip the user's name
        model = nxt
        i += 1
    return list(model.model_fields)


def _model_in(ann: Any) -> Any:
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def user_error_from_spec_validation(exc: ValidationError, source: str, text: str | None = None) -> UserError:
    errors = exc.errors()
    err = errors[0]
    loc = tuple(err.get("loc", ()))
    path = ".".join(str(p) for p in loc) or "(top level)"
    line = _line_of(text, loc)
    where = f"{source}:{line}" if line else source
    kind = err.get("type", "")
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        fix = (f"did you mean {close[0]!r}? " if close else "") + (
            f"known keys here: {', '.join(allowed)}" if allowed else SPEC_DOC)
        return UserError(f"{where}: {path}: unknown key{tail}", fix)
    if kind == "missing":
        return UserError(f"{where}: {path}: missing{tail}", f"add {loc[-1]}: ({SPEC_DOC})")
    msg = str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    problem, sep, fix = msg.partition(" — ")
    if kind != "value_error":
        shown = repr(err.get("input"))
        if len(shown) > 60:
            shown = shown[:60] + "..."
        problem = f"{shown}: {problem[:1].lower() + problem[1:]}"
    return UserError(f"{where}: {path}: {problem}{tail}", fix if sep else SPEC_DOC)


# RunSpec fields -> where an experiment spec sets them (for the FieldErrors of runner.plan.resolve).
def _field_path(field: str, target: str, workload: str) -> str:
    if field in WorkloadSpec.model_fields:
        return f"workloads.{workload}.{field}"
    if field in RunOptions.model_fields:
        return f"options.{field}"
    if field in StopRules.model_fields:
        return f"stop.{field}"
    if field in TargetSpec.model_fields:
        return f"targets.{target}.{field}"
    if field == "header":
        return f"targets.{target}.headers"
    if field in ("num_prompts", "request_rate", "max_concurrency", "burstiness", "arrival"):
        return "load"
    return field


def check_run_specs(spec: ExperimentSpec, source: str) -> None:
    """Resolve every cell's RunSpec, so the run's own checks pass before anything starts;
    a bad value is named by the spec's key for it."""
    from infermeter.runner.plan import resolve

    for cell in build_plan(spec):
        t, w = cell.target, cell.workload
        try:
            url = cell.settings["target"].get("url") or "http://127.0.0.1:1"
            resolve(runspec_from_settings(cell.settings, base_url=url, tokenizer=None, result_dir="."))
        except FieldError as exc:
            err = exc.worded(lambda path: _field_path(path.rpartition(".")[2], t, w), SPEC_DOC)
            raise UserError(f"{source}: cell {cell.cell_id}: {err.problem}", err.fix) from None
