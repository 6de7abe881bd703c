"""The telemetry settings: the log level ([server] log_level) and tracing
([telemetry] tracing, otlp_endpoint), checked like every other key; each
tracing setting builds its exporter (nothing is sent until a span ends)."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from pinlife.config.settings import ConfigError, load
from pinlife.runtime.tracing import Tracing


def test_the_defaults_are_info_and_no_tracing():
    s = load({})
    assert (s.log_level, s.tracing, s.otlp_endpoint) == ("info", "off", "")
    assert Tracing.from_settings(s.tracing, s.otlp_endpoint) is None


def test_the_file_and_the_variables_set_them(tmp_path):
    f = tmp_path / "pinlife.toml"
    f.write_text('[server]\nlog_level = "debug"\n[telemetry]\ntracing = "otlp"\notlp_endpoint = "http://collector:4317"\n')
    s = load({"PINLIFE_LOG_LEVEL": "warning"}, path=f)
    assert (s.log_level, s.tracing, s.otlp_endpoint) == ("warning", "otlp", "http://collector:4317")


def test_unknown_values_are_refused_by_name():
    with pytest.raises(ConfigError) as err:
        load({"PINLIFE_LOG_LEVEL": "verbose", "PINLIFE_TRACING": "jaeger"})
    assert sorted(err.value.problems) == [
        "PINLIFE_LOG_LEVEL ([server] log_level) must be debug, info, warning or error, not 'verbose'",
        "PINLIFE_TRACING ([telemetry] tracing) must be off, console or otlp, not 'jaeger'",
    ]


@pytest.mark.parametrize("setting, exporter", [("console", ConsoleSpanExporter), ("otlp", OTLPSpanExporter)])
def test_each_tracing_setting_builds_its_exporter(setting, exporter):
    tracing = Tracing.from_settings(setting, "http://127.0.0.1:1" if setting == "otlp" else "")
    assert tracing is not None
    try:
        assert isinstance(tracing.exporter, exporter)
    finally:
        tracing.shutdown()
        tracing.shutdown()  # once is enough: again does nothing
