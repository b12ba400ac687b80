"""Experiments: spec-driven sweeps, built-in recipes, a results store, and imports.

* ``spec``: the YAML experiment spec's models (``ExperimentSpec``); ``specfile``: reading one (``load_spec``, ``parse_spec``);
* ``cells``: its cells in run order and duration estimates (``build_plan``, ``Estimator``);
* ``sweep``: running the cells (``run_sweep``), resumable;
* ``store``: the on-disk layout and its SQLite index (``Store``);
* ``recipes``: built-in specs (``list_recipes``, ``load_recipe``);
* ``importers``: ``vllm bench serve`` JSON results and console summaries (``import_vllm``).

See docs/experiments.md.
"""

from infermeter.experiments.cells import Cell, Estimator, build_plan
from infermeter.experiments.spec import ExperimentSpec
from infermeter.experiments.specfile import load_spec, parse_spec
from infermeter.experiments.store import STORE_SCHEMA_VERSION, Store

__all__ = ["Cell", "Estimator", "ExperimentSpec", "STORE_SCHEMA_VERSION", "Store", "build_plan", "load_spec",
           "parse_spec"]
