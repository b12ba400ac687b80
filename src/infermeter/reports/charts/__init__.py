"""The report's charts (matplotlib, Agg backend, imported only when a chart is drawn).

* ``base``: ``Chart`` (a PNG at twice the page's pixels, an SVG, and hover points), palette, axes;
* ``lines``: metrics against load, with gap labels and rings on the flagged minority;
* ``overview``: Pareto fronts per load mode, GPU memory, failed requests;
* ``distributions``: TTFT, ITL, TPOT and E2EL CDFs and histograms at one load;
* ``timelines``: one cell over time (requests, tokens, TTFT, server queue and KV cache, GPU);
* ``suite``: ``build_charts``, every chart the data supports in report order.

Every target is one series, in the same colour and marker in every chart (``palette``: keyed by
the sorted target names).
"""

from infermeter.reports.charts.base import SCALE, Chart, palette, pyplot
from infermeter.reports.charts.suite import build_charts

__all__ = ["Chart", "SCALE", "build_charts", "palette", "pyplot"]
