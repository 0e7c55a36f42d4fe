"""Helper for benchmarks: report a figure in the form tests/bench/run.py collects."""

import json


def figure(bench, metric, value, unit=""):
    """Print one figure line; ``value`` is a number or a short string."""
    print("FIGURE " + json.dumps({"bench": bench, "metric": metric, "value": value, "unit": unit}), flush=True)
