"""Reports: charts, tables, HTML and Markdown from one or more experiment stores, and
``compare`` of two runs.

* ``data``: loading stores / result files into cells, grouping repeats (mean ± 95 % CI);
* ``charts``: matplotlib figures (imported lazily: a run never loads them);
* ``tables``: per-cell and side-by-side tables with ratio columns and flags;
* ``html`` / ``markdown``: the self-contained report and the paste-able summary;
* ``compare``: two runs' headline metrics, deltas and the better side;
* ``example``: a synthetic experiment store (documentation and tests).

See docs/reports.md.
"""
