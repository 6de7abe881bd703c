"""`pinlife audit stats` as tables on a narrow terminal (service/cli/audit.py):
every column either shown whole or named as left out, no line wider than
the terminal. A statistics answer made here, every count non-zero."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pinlife.cli import audit
from pinlife.domain.audit import COUNT_NAMES
from pinlife.v1 import audit_service_pb2 as apb

START = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def statistics() -> apb.GetStatisticsResponse:
    counts = apb.Counts(**{name: 100 + i for i, name in enumerate(COUNT_NAMES)})
    row = lambda key: apb.CountsBy(key=key, counts=counts)  # noqa: E731
    hours = [row(f"2026-12-01T{h:02d}:00:00+09:00") for h in range(9, 12)]
    return apb.GetStatisticsResponse(
        total=counts,
        by_channel=[row("ward_office"), row("medical_reader")],
        by_office=[row("naka-ward-office")],
        by_pin_type=[row("user_certificate")],
        by_terminal=[row("clinic-reader-07")],
        by_time=hours,
    )


@pytest.mark.parametrize("width", [80, 100, 250])
def test_statistics_tables_show_each_count_or_say_it_is_left_out(width, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(width))
    audit._stats_tables(statistics(), START, START.replace(hour=3), "hour")
    out = capsys.readouterr().out
    assert all(len(line) <= width for line in out.splitlines())
    assert "…" not in out.replace(" … ", "")  # no header cut to an ellipsis (the quiet-run range aside)
    said = " ".join(out.split())
    left_out = said.split(f"not shown at {width} columns: ", 1)[1].split(" (")[0].split(", ") if "not shown" in said else []
    tables = f" {said.split('not shown at')[0]} "
    for name in COUNT_NAMES:
        assert (name in left_out) != (f" {name} " in tables), (name, left_out)
    if width == 250:
        assert left_out == []
    if width == 80:
        assert {"checks", "failures", "events"}.isdisjoint(left_out) and "suspensions" in left_out
