"""The metrics every store of this process reports (``sessionlog_store.metrics()``),
under the names the Rust library gives them (``sessionlog_*``, see DESIGN.md
§16 in the repository), and the same in the Prometheus text format for a
``/metrics`` route (``sessionlog_store.metrics_text()``).

The native module installs a recorder when it is imported, before any store
opens: each store registers its counters once, at open, and counts in
atomics with no Python involved; these functions only read them.
"""

from __future__ import annotations

from typing import Any, Dict, List

from . import _native

#: The content type of ``metrics_text()``, for a response.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics() -> Dict[str, List[Dict[str, Any]]]:
    """Every metric, by name: a list of samples, one per store (its
    ``labels``: ``backend``, ``store``, and for some ``kind`` or ``op``).
    A counter's or gauge's sample has a ``value``; a histogram's (a
    latency in seconds) has its ``count`` and ``sum``. JSON-serialisable.
    """
    out: Dict[str, List[Dict[str, Any]]] = {}
    for kind, name, labels, count, value, _help in _native.metrics_samples():
        if kind == "histogram":
            sample: Dict[str, Any] = {"labels": labels, "count": count, "sum": value}
        elif kind == "counter":
            sample = {"labels": labels, "value": int(value)}
        else:
            sample = {"labels": labels, "value": value}
        out.setdefault(name, []).append(sample)
    return out


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def metrics_text() -> str:
    """Every metric in the Prometheus text exposition format (version
    0.0.4): counters and gauges as they are, each histogram as a summary
    (its ``_count`` and ``_sum``)."""
    by_name: Dict[str, List[Any]] = {}
    for sample in _native.metrics_samples():
        by_name.setdefault(sample[1], []).append(sample)
    lines: List[str] = []
    for name in sorted(by_name):
        samples = by_name[name]
        kind, help_text = samples[0][0], samples[0][5]
        if help_text:
            lines.append(f"# HELP {name} " + help_text.replace("\\", "\\\\").replace("\n", "\\n"))
        lines.append(f"# TYPE {name} " + ("summary" if kind == "histogram" else kind))
        for _, _, labels, count, value, _ in samples:
            shown = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in sorted(labels.items()))
            if kind == "histogram":
                lines.append(f"{name}_count{{{shown}}} {count}")
                lines.append(f"{name}_sum{{{shown}}} {_number(value)}")
            else:
                lines.append(f"{name}{{{shown}}} {_number(value)}")
    return "\n".join(lines) + "\n"
