"""The audit queries' plans: each kind of query reads an ordered index range
(one terminal's day, one event type's hour, one office's day, a time range,
one card's history) rather than scanning the events table: on PostgreSQL the
index condition bounds both the key and the time range
(after ANALYZE, over 50,000 rows spread over 10 days, 500 terminals and
20 offices) and SQLite. The queries only read plans: the rows are made once
per backend, for all of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from pinlife.domain.audit import Filter
from pinlife.store.audit_reads import query_plan
from pinlife.store.event_store import EventStore
from tests.conftest import BACKENDS

ROWS = 50_000
T0 = datetime(2026, 9, 1, tzinfo=UTC)
DAY = timedelta(days=1)

# Synthetic rows (plans only: the hashes are not links): position i, one
# event every 43.2 s from T0, terminals and types in rotation.
PG_FILL = f"""
INSERT INTO events (position, stream_id, stream_kind, version, event_id, event_type, schema_version, occurred_at,
                    pin_type, channel, terminal_id, request_id, payload, prev_hash, hash, key_id, office)
SELECT i, 'card-' || (i % 40000), 'card', i / 40000 + 1, md5(i::text), (ARRAY['PinVerified','PinVerificationFailed',
       'PinLocked','CardEnrolled','PinReset'])[1 + i % 5], 1, TIMESTAMPTZ '{T0.isoformat()}' + i * INTERVAL '17.28 seconds',
       'user_certificate', 'medical_reader', 'reader-' || (i % 500), md5(i::text), '{{}}', repeat('0', 64), repeat('0', 64),
       'k1', CASE WHEN i % 10 = 0 THEN 'office-' || (i % 20) END
FROM generate_series(1, {ROWS}) AS i
"""
SQLITE_FILL = f"""
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
INSERT INTO events (position, stream_id, stream_kind, version, event_id, event_type, schema_version, occurred_at,
                    pin_type, channel, terminal_id, request_id, payload, prev_hash, hash, key_id, office)
SELECT i, 'card-' || (i % 40000), 'card', i / 40000 + 1, 'e-' || i,
       CASE i % 5 WHEN 0 THEN 'PinVerified' WHEN 1 THEN 'PinVerificationFailed' WHEN 2 THEN 'PinLocked'
                  WHEN 3 THEN 'CardEnrolled' ELSE 'PinReset' END, 1,
       strftime('%Y-%m-%d %H:%M:%f', '{T0.strftime("%Y-%m-%d %H:%M:%S")}', '+' || (i * 17.28) || ' seconds'),
       'user_certificate', 'medical_reader', 'reader-' || (i % 500), 'r-' || i, '{{}}', printf('%064d', 0),
       printf('%064d', 0), 'k1', CASE WHEN i % 10 = 0 THEN 'office-' || (i % 20) END
FROM n
"""


@pytest.fixture(scope="module", params=BACKENDS)
def filled(request, module_databases):
    """A store of each backend holding the synthetic rows, analysed."""
    store = EventStore(module_databases.create(request.param))
    try:
        with store.writer.begin() as conn:
            conn.execute(text(PG_FILL if store.dialect == "postgresql" else SQLITE_FILL))
            conn.execute(text("ANALYZE events" if store.dialect == "postgresql" else "ANALYZE"))
        yield store
    finally:
        store.close()


QUERIES = {
    "one terminal's day": (Filter(start=T0 + 4 * DAY, end=T0 + 5 * DAY, terminal_id="reader-7"), "terminal_id"),
    "one event type's hour": (
        Filter(start=T0 + 5 * DAY, end=T0 + 5 * DAY + timedelta(hours=1), event_types=frozenset({"PinLocked"})),
        "event_type",
    ),
    "one office's day": (Filter(start=T0 + 6 * DAY, end=T0 + 7 * DAY, office="office-10"), "office"),
    "an hour of everything": (Filter(start=T0 + 7 * DAY, end=T0 + 7 * DAY + timedelta(hours=1)), "occurred_at_position"),
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_each_audit_query_reads_its_index_not_the_table(filled, name):
    f, index = QUERIES[name]
    plan = query_plan(filled, f)
    assert f"ix_events_{index}" in plan, plan
    if filled.dialect == "postgresql":
        assert "Seq Scan" not in plan, plan
        # Only the range is read: the index condition bounds the key and the
        # time (the planner may sort the few rows a bitmap scan returns).
        cond = next(line for line in plan.splitlines() if "Index Cond" in line)
        assert "occurred_at >=" in cond and "occurred_at <" in cond, plan
        if index != "occurred_at_position":
            assert f"{index.split('_occurred')[0]})" in cond or f"{index})" in cond, plan
    else:
        assert "SCAN events" not in plan.replace("SCAN events USING", ""), plan
        assert "TEMP B-TREE" not in plan, plan
