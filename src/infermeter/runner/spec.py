"""RunSpec: everything one run needs, one section per concern (runner/sections.py).

The CLI's flags (vLLM's names, flat) and an experiment cell's settings are flat too:
``RunSpec.from_flat`` routes each flat name to its section through one table,
``FIELD_SECTION``.  A RunSpec checks types only; ``runner.plan.resolve`` judges the
values, once, and derives everything a run needs from them.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infermeter.errors import FieldError
from infermeter.runner.sections import (
    ClientSection, CostSection, EngineSection, LoadSection, OutputSection, TargetSection, TelemetrySection,
    WorkloadSection,
)

SECTIONS: dict[str, type[BaseModel]] = {
    "target": TargetSection, "engine": EngineSection, "workload": WorkloadSection, "load": LoadSection,
    "client": ClientSection, "output": OutputSection, "telemetry": TelemetrySection, "cost": CostSection,
}
# flat field name -> its section: the one routing table
FIELD_SECTION: dict[str, str] = {name: section for section, model in SECTIONS.items() for name in model.model_fields}
assert len(FIELD_SECTION) == sum(len(m.model_fields) for m in SECTIONS.values()), "a flat name in two sections"


def field_path(name: str) -> str:
    """``num_prompts`` -> ``load.num_prompts``."""
    return f"{FIELD_SECTION[name]}.{name}"


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: TargetSection = Field(default_factory=TargetSection)
    engine: EngineSection = Field(default_factory=EngineSection)
    workload: WorkloadSection = Field(default_factory=WorkloadSection)
    load: LoadSection = Field(default_factory=LoadSection)
    client: ClientSection = Field(default_factory=ClientSection)
    output: OutputSection = Field(default_factory=OutputSection)
    telemetry: TelemetrySection = Field(default_factory=TelemetrySection)
    cost: CostSection = Field(default_factory=CostSection)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "RunSpec":
        """A RunSpec from flat field names; an unknown name or a value of the wrong type is a
        ``FieldError`` naming its field."""
        nested: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            section = FIELD_SECTION.get(name) if isinstance(name, str) else None
            if section is None:
                raise FieldError(str(name), value, "unknown setting {name!r}",
                                 "use a RunSpec field (runner/sections.py)", name=name)
            nested.setdefault(section, {})[name] = value
        try:
            return cls.model_validate(nested)
        except ValidationError as exc:
            raise _type_error(exc) from None

    def flat(self) -> dict[str, Any]:
        """The flat field names and their values (what ``from_flat`` takes)."""
        return {name: value for section in SECTIONS for name, value in getattr(self, section)}

    def replace(self, **changes: Any) -> "RunSpec":
        """A copy with some flat fields changed, checked as ``from_flat`` checks."""
        return RunSpec.from_flat({**self.flat(), **changes})

    def uses_embedded_engine(self) -> bool:
        t = self.target
        return t.base_url is None and t.host is None and t.port is None

    def server_url(self) -> str:
        """The server's base URL (``base_url``, else ``host``/``port``); not for the embedded engine."""
        t = self.target
        return (t.base_url or f"http://{t.host or '127.0.0.1'}:{t.port or 8000}").rstrip("/")


def _type_error(exc: ValidationError) -> FieldError:
    """The first problem pydantic found, as a FieldError naming its field."""
    errors = exc.errors()
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ())]
    path = ".".join(loc[:2])
    shown = repr(err.get("input"))
    if len(shown) > 60:
        shown = shown[:60] + "..."
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return FieldError(path, err.get("input"), "{" + path + "}{sub} {shown}: {msg}{tail}", None,
                      sub="".join("." + p for p in loc[2:]), shown=shown, msg=err.get("msg", "invalid"), tail=tail)


def runspec_from_flags(values: dict[str, Any]) -> RunSpec:
    """A RunSpec from flat field names (what ``infermeter run``'s parser produces)."""
    return RunSpec.from_flat(values)
