"""Metrics: the counters the Rust stores keep (the library's ``metrics``
feature, through the recorder the native module installs) as
``sessionlog_store.metrics()`` returns them, and the example apps' ``/metrics``
routes (Django and Flask), read with prometheus_client's parser of the
Prometheus text format."""

from __future__ import annotations

import os

import pytest
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

import sessionlog_store
import sessionlog_store.django
from flaskapp import create_app


def _store_samples(text: str, store: str):
    """Every sample of the text format whose store label is ``store``, by
    sample name (``name_count``, ``name_sum`` for a summary)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("store") == store:
                assert s.labels["backend"] == "log", s
                out.setdefault(s.name, []).append(s)
    return out


def _value(samples, name, **labels):
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_counts_each_store_call(tmp_path):
    path = str(tmp_path / "m.db")
    store = sessionlog_store.LogSessionStore(path)
    label = os.path.realpath(path)
    sid = sessionlog_store.generate_id()
    engine = store.native
    engine.save(sid, b"user=alice")
    assert engine.load(sid)[0] == b"user=alice"
    assert engine.load(sessionlog_store.generate_id()) is None
    m = sessionlog_store.metrics()
    mine = lambda name: [s for s in m.get(name, []) if s["labels"]["store"] == label]  # noqa: E731
    assert [s["value"] for s in mine("sessionlog_saves_total")] == [1]
    assert [s["value"] for s in mine("sessionlog_loads_total")] == [2]
    (latency,) = mine("sessionlog_load_seconds")
    assert latency["count"] == 2 and latency["sum"] >= 0
    assert latency["labels"] == {"backend": "log", "store": label}
    # No label or value holds the session id.
    assert sid not in repr(m) and sid not in sessionlog_store.metrics_text()


def test_flask_app_metrics_route_parses_and_counts(tmp_path):
    path = str(tmp_path / "flask.db")
    app = create_app(path, conditional=False)
    c = app.test_client()
    assert c.get("/login/?user=alice").json["user"] == "alice"
    assert c.get("/count/").json["count"] == 1
    r = c.get("/metrics")
    assert r.status_code == 200
    assert r.content_type.startswith("text/plain")
    samples = _store_samples(r.get_data(as_text=True), os.path.realpath(path))
    # The login saved a new session, the counter loaded and saved it.
    assert _value(samples, "sessionlog_saves_total") >= 2
    assert _value(samples, "sessionlog_loads_total") >= 1
    assert _value(samples, "sessionlog_save_seconds_count") >= 2
    # Gauges of the store (set when it opened).
    assert "sessionlog_live_sessions" in samples


def test_django_app_metrics_route_parses_and_counts(tmp_path):
    path = str(tmp_path / "django.db")
    with override_settings(SESSIONLOG_PATH=path):
        c = Client()
        assert c.get("/login/?user=bob").json()["user"] == "bob"
        assert c.get("/count/").json()["count"] == 1
        r = c.get("/metrics")
        assert r.status_code == 200
        assert r["Content-Type"].startswith("text/plain")
        samples = _store_samples(r.content.decode(), os.path.realpath(path))
        assert _value(samples, "sessionlog_saves_total") >= 2
        assert _value(samples, "sessionlog_loads_total") >= 1
        assert _value(samples, "sessionlog_save_seconds_count") >= 2


@pytest.mark.parametrize("module", ["django", "flask"])
def test_framework_metrics_is_the_package_dict(module):
    mod = __import__(f"sessionlog_store.{module}", fromlist=["metrics"])
    m = mod.metrics()
    assert isinstance(m, dict)
    assert all(name.startswith("sessionlog_") for name in m)
