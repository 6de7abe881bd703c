"""AuditService over a real gRPC channel, on SQLite and PostgreSQL: a card's
history, queries across streams, statistics, checkpoints and integrity, with
their unhappy paths, and the audit of the auditors. (WatchEvents:
test_audit_watch.py; roles: test_access.py.)"""

from __future__ import annotations

import base64
import datetime as dt
import uuid

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from pinlife.domain import merkle
from pinlife.domain.chain import leaf_data
from pinlife.keys.notes import open_note
from pinlife.runtime.clock import ServiceClock
from pinlife.store import checkpoints
from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from tests.e2e.harness import Client, ThreadedServer
from tests.rpc import field_violations

USER = pb.PIN_TYPE_USER_CERTIFICATE
SIGNATURE = pb.PIN_TYPE_SIGNATURE
NOW = dt.datetime(2026, 12, 1, 1, 30, tzinfo=dt.UTC)  # a Tuesday, 10:30 in Tokyo
AUDITOR = "auditor-e2e"


def ts(at: dt.datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(at)
    return t


def window(before: dt.timedelta = dt.timedelta(hours=2), after: dt.timedelta = dt.timedelta(hours=2)) -> dict:
    return {"from": ts(NOW - before), "to": ts(NOW + after)}


@pytest.fixture
def server(db_url, keys):
    srv = ThreadedServer(db_url, keys, clock=ServiceClock(fixed=NOW))
    yield srv
    srv.close()


@pytest.fixture
def reader(server):
    c = Client(server.target, terminal="reader-01")
    yield c
    c.close()


@pytest.fixture
def auditor(server):
    c = Client(server.target, terminal=AUDITOR)
    yield c
    c.close()


def lock_user_pin(reader: Client, card: str) -> None:
    reader.enroll(card, {USER: "4821", SIGNATURE: "ABC123"})
    for _ in range(3):
        reader.verify(card, USER, "0000")
    reader.verify(card, USER, "4821")  # locked: recorded, not checked


def invalid(call) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return field_violations(err.value)


def test_a_cards_history_has_every_envelope_field_and_typed_payloads(reader, auditor):
    lock_user_pin(reader, "card-H1")
    r = auditor.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id="card-H1"), timeout=10)
    types = [e.event_type for e in r.events]
    assert types == [
        "CardEnrolled",
        "PinVerificationFailed",
        "PinVerificationFailed",
        "PinVerificationFailed",
        "PinLocked",
        "LockedPinAttempted",
    ]
    assert r.stream_version == 6 and not r.next_page_token
    assert [e.version for e in r.events] == [1, 2, 3, 4, 5, 6]
    assert all(e.stream_id == "card-H1" and e.stream_kind == apb.STREAM_KIND_CARD for e in r.events)
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(r.events, r.events[1:]))
    assert len({e.position for e in r.events}) == 6 and len({e.event_id for e in r.events}) == 6
    first_fail = r.events[1]
    assert first_fail.pin_type == USER and first_fail.channel == "development" and first_fail.terminal_id == "reader-01"
    assert first_fail.occurred_at.ToDatetime(tzinfo=dt.UTC) == NOW
    assert first_fail.request_id and first_fail.key_id and first_fail.outcome == apb.EVENT_OUTCOME_FAILURE
    p = first_fail.payload
    assert p.WhichOneof("kind") == "pin_verification_failed"
    assert (p.pin_verification_failed.purpose, p.pin_verification_failed.remaining_tries) == ("verify", 2)
    assert MessageToDict(p.json)["remaining_tries"] == 2  # the generic form too
    assert r.events[0].payload.card_enrolled.pin_types == [USER, SIGNATURE]
    assert r.events[0].schema_version == 2
    assert r.events[4].payload.pin_locked.consecutive_failures == 3 and r.events[4].outcome == apb.EVENT_OUTCOME_LOCKED
    newest = auditor.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id="card-H1", order=apb.ORDER_NEWEST_FIRST), timeout=10)
    assert [e.version for e in newest.events] == [6, 5, 4, 3, 2, 1]


def test_history_pages_filters_and_the_same_order_every_time(reader, auditor):
    lock_user_pin(reader, "card-H2")
    reader.verify("card-H2", SIGNATURE, "ABC123")
    for order in (apb.ORDER_OLDEST_FIRST, apb.ORDER_NEWEST_FIRST):
        seen, token = [], ""
        while True:
            r = auditor.audit.GetCardHistory(
                apb.GetCardHistoryRequest(card_id="card-H2", order=order, page_size=2, page_token=token), timeout=10
            )
            assert len(r.events) <= 2
            seen += [e.version for e in r.events]
            token = r.next_page_token
            if not token:
                break
        assert seen == (list(range(1, 8)) if order == apb.ORDER_OLDEST_FIRST else list(range(7, 0, -1)))
    only = apb.EventFilter(event_types=["PinLocked", "PinVerified"])
    r = auditor.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id="card-H2", filter=only), timeout=10)
    assert [e.event_type for e in r.events] == ["PinLocked", "PinVerified"]
    r = auditor.audit.GetCardHistory(
        apb.GetCardHistoryRequest(card_id="card-H2", filter=apb.EventFilter(pin_type=SIGNATURE)), timeout=10
    )
    assert [e.event_type for e in r.events] == ["PinVerified"]
    r = auditor.audit.GetCardHistory(
        apb.GetCardHistoryRequest(card_id="card-H2", filter=apb.EventFilter(outcomes=[apb.EVENT_OUTCOME_FAILURE])),
        timeout=10,
    )
    assert [e.event_type for e in r.events] == ["PinVerificationFailed"] * 3
    later = apb.EventFilter(**{"from": ts(NOW + dt.timedelta(seconds=1))})
    assert not auditor.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id="card-H2", filter=later), timeout=10).events


def test_history_refuses_bad_requests_with_the_field_named(reader, auditor):
    reader.enroll("card-H3", {USER: "4821"})
    history = auditor.audit.GetCardHistory
    first = history(apb.GetCardHistoryRequest(card_id="card-H3", page_size=1), timeout=10)
    reader.verify("card-H3", USER, "4821")
    token = history(apb.GetCardHistoryRequest(card_id="card-H3", page_size=1), timeout=10).next_page_token
    assert token and not first.next_page_token
    assert "page_token" in invalid(
        lambda: history(apb.GetCardHistoryRequest(card_id="card-H3", page_token="garbage!"), timeout=10)
    )
    forged = base64.urlsafe_b64encode(b'{"v":1,"k":["x"],"q":"0"}').decode()
    assert "page_token" in invalid(lambda: history(apb.GetCardHistoryRequest(card_id="card-H3", page_token=forged), timeout=10))
    other = apb.GetCardHistoryRequest(card_id="card-H3", page_token=token, order=apb.ORDER_NEWEST_FIRST)
    assert "another query" in invalid(lambda: history(other, timeout=10))["page_token"]
    assert "page_size" in invalid(lambda: history(apb.GetCardHistoryRequest(card_id="card-H3", page_size=1001), timeout=10))
    reversed_range = apb.EventFilter(**{"from": ts(NOW), "to": ts(NOW - dt.timedelta(hours=1))})
    assert "filter.to" in invalid(
        lambda: history(apb.GetCardHistoryRequest(card_id="card-H3", filter=reversed_range), timeout=10)
    )
    unknown = apb.EventFilter(event_types=["PinExploded"])
    assert (
        "PinExploded"
        in invalid(lambda: history(apb.GetCardHistoryRequest(card_id="card-H3", filter=unknown), timeout=10))[
            "filter.event_types"
        ]
    )
    assert "card_id" in invalid(lambda: history(apb.GetCardHistoryRequest(card_id="123456789018"), timeout=10))
    with pytest.raises(grpc.RpcError) as err:
        history(apb.GetCardHistoryRequest(card_id="card-nobody"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_filter_list_is_bounded_as_sent_repeats_included(reader, auditor):
    """More than 50 values in one list is INVALID_ARGUMENT naming the field,
    counted as sent: 51 copies of one event type too (docs/audit.md)."""
    lock_user_pin(reader, "card-H4")
    audit = auditor.audit
    repeated = {
        "filter.event_types": apb.EventFilter(event_types=["PinLocked"] * 51),
        "filter.channels": apb.EventFilter(channels=["medical_reader"] * 51),
        "filter.outcomes": apb.EventFilter(outcomes=[apb.EVENT_OUTCOME_LOCKED] * 51),
    }
    for name, too_long in repeated.items():
        for method, request in (
            (audit.QueryEvents, apb.QueryEventsRequest(filter=too_long)),
            (audit.GetCardHistory, apb.GetCardHistoryRequest(card_id="card-H4", filter=too_long)),
        ):
            found = invalid(lambda method=method, request=request: method(request, timeout=10))
            assert set(found) == {name} and "at most 50 values" in found[name], found
    at_limit = apb.EventFilter(event_types=["PinLocked"] * 50, outcomes=[apb.EVENT_OUTCOME_LOCKED] * 50)
    page = audit.GetCardHistory(apb.GetCardHistoryRequest(card_id="card-H4", filter=at_limit), timeout=10)
    assert [e.event_type for e in page.events] == ["PinLocked"]


def test_query_events_across_cards_and_terminal_streams(server, reader, auditor):
    for i in range(3):
        lock_user_pin(reader, f"card-Q{i}")
    other = Client(server.target, terminal="reader-02")
    other.enroll("card-Q9", {USER: "4821"})
    other.verify("card-Q9", USER, "0000")
    other.close()
    query = auditor.audit.QueryEvents
    mine = query(apb.QueryEventsRequest(filter=apb.EventFilter(terminal_id="reader-02", **window())), timeout=10)
    assert [(e.stream_id, e.event_type) for e in mine.events] == [
        ("card-Q9", "CardEnrolled"),
        ("card-Q9", "PinVerificationFailed"),
    ]
    locks = query(apb.QueryEventsRequest(filter=apb.EventFilter(event_types=["PinLocked"])), timeout=10)
    assert sorted(e.stream_id for e in locks.events) == ["card-Q0", "card-Q1", "card-Q2"]
    failures = query(apb.QueryEventsRequest(filter=apb.EventFilter(outcomes=[apb.EVENT_OUTCOME_FAILURE])), timeout=10)
    assert len(failures.events) == 10 and {e.event_type for e in failures.events} == {"PinVerificationFailed"}
    by_channel = query(apb.QueryEventsRequest(filter=apb.EventFilter(channels=["medical_reader"])), timeout=10)
    assert not by_channel.events  # development mode: every caller's channel is "development"
    # Pages in (occurred_at, position) order, both ways, the same events.
    everything = []
    for order in (apb.ORDER_OLDEST_FIRST, apb.ORDER_NEWEST_FIRST):
        seen, token = [], ""
        while True:
            r = query(
                apb.QueryEventsRequest(order=order, page_size=4, page_token=token, stream_kind=apb.STREAM_KIND_CARD), timeout=10
            )
            seen += [e.position for e in r.events]
            token = r.next_page_token
            if not token:
                break
        everything.append(seen)
    assert everything[0] == sorted(everything[0]) and everything[1] == everything[0][::-1]
    assert len(everything[0]) == 3 * 6 + 2
    assert "filter.channels" in invalid(
        lambda: query(apb.QueryEventsRequest(filter=apb.EventFilter(channels=["hacker"])), timeout=10)
    )
    assert "page_size" in invalid(lambda: query(apb.QueryEventsRequest(page_size=5000), timeout=10))


def test_every_audit_call_is_recorded_on_the_auditors_stream(reader, auditor):
    lock_user_pin(reader, "card-A1")
    auditor.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id="card-A1", page_size=4), timeout=10)
    auditor.audit.QueryEvents(apb.QueryEventsRequest(filter=apb.EventFilter(terminal_id="reader-01")), timeout=10)
    auditor.audit.GetStatistics(apb.GetStatisticsRequest(**window()), timeout=10)
    with pytest.raises(grpc.RpcError):
        auditor.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id="card-nobody"), timeout=10)
    reads = auditor.audit.QueryEvents(
        apb.QueryEventsRequest(filter=apb.EventFilter(event_types=["AuditRead"], terminal_id=AUDITOR)), timeout=10
    )
    recorded = [
        (e.payload.audit_read.rpc, e.payload.audit_read.card_id, e.payload.audit_read.events_returned) for e in reads.events
    ]
    assert recorded == [
        ("GetCardHistory", "card-A1", 4),
        ("QueryEvents", "", 6),
        ("GetStatistics", "", 0),
        ("GetCardHistory", "card-nobody", 0),
    ]
    assert all(e.stream_id == f"terminal:{AUDITOR}" and e.stream_kind == apb.STREAM_KIND_TERMINAL for e in reads.events)
    assert '"terminal_id":"reader-01"' in reads.events[1].payload.audit_read.filter


def test_statistics_count_by_channel_terminal_pin_type_and_hour(server, reader, auditor):
    lock_user_pin(reader, "card-S1")
    reader.enroll("card-S2", {USER: "4821"})
    reader.verify("card-S2", USER, "0000")
    reader.verify("card-S2", USER, "4821")
    stats = auditor.audit.GetStatistics(apb.GetStatisticsRequest(**window(), top_terminals=5), timeout=10)
    t = stats.total
    assert (t.checks, t.failures, t.locks) == (4 + 2, 4, 1)  # 3 wrong + 1 locked attempt; 1 wrong + 1 right
    assert [c.key for c in stats.by_channel] == ["development"]
    assert [p.key for p in stats.by_pin_type] == ["user_certificate"] and stats.by_pin_type[0].counts.failures == 4
    assert len(stats.by_time) == 5  # 08:30-12:30 Tokyo: the hours starting at 08, 09, 10, 11 and 12
    hours = [c.key for c in stats.by_time]
    assert hours[0].endswith("+09:00") and any(c.counts.failures == 4 for c in stats.by_time)
    for bucket in stats.by_time:  # each bucket by channel (here one), summing to the bucket
        assert [c.key for c in bucket.by_channel] == (["development"] if bucket.counts.events else [])
        assert sum(c.counts.failures for c in bucket.by_channel) == bucket.counts.failures
        assert sum(c.counts.events for c in bucket.by_channel) == bucket.counts.events
    assert not stats.by_channel[0].by_channel  # only buckets are broken down
    assert stats.by_terminal[0].key == "reader-01"
    top = stats.most_distinct_card_failures[0]
    assert (top.terminal_id, top.distinct_cards, top.failures) == ("reader-01", 2, 4)
    by_day = auditor.audit.GetStatistics(
        apb.GetStatisticsRequest(**window(dt.timedelta(days=2), dt.timedelta(days=1)), granularity=apb.GRANULARITY_DAY),
        timeout=10,
    )
    assert len(by_day.by_time) == 4 and sum(c.counts.failures for c in by_day.by_time) == 4
    stats_call = auditor.audit.GetStatistics
    assert "from" in invalid(lambda: stats_call(apb.GetStatisticsRequest(to=ts(NOW)), timeout=10))
    assert "to" in invalid(
        lambda: stats_call(apb.GetStatisticsRequest(**{"from": ts(NOW), "to": ts(NOW - dt.timedelta(hours=1))}), timeout=10)
    )
    assert "to" in invalid(lambda: stats_call(apb.GetStatisticsRequest(**window(dt.timedelta(days=40))), timeout=10))
    assert "top_terminals" in invalid(lambda: stats_call(apb.GetStatisticsRequest(**window(), top_terminals=5000), timeout=10))


def test_the_latest_checkpoint_verifies_with_the_key_given_and_matches_the_log(server, reader, auditor, keys):
    with pytest.raises(grpc.RpcError) as err:
        auditor.audit.GetCheckpoint(apb.GetCheckpointRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    lock_user_pin(reader, "card-C1")
    checkpoints.sign_checkpoint(server.store, keys, NOW)
    r = auditor.audit.GetCheckpoint(apb.GetCheckpointRequest(), timeout=10)
    body, _ = open_note(r.note, [r.verifier_key])
    assert body.splitlines() == [r.origin, str(r.tree_size), r.root_hash]
    events = server.store.log.read_all(0, r.tree_size)
    assert len(events) == r.tree_size
    assert base64.b64decode(r.root_hash) == merkle.root_of([leaf_data(e.position, e.envelope()) for e in events])


def test_verify_integrity_streams_progress_then_a_report_and_names_a_tampered_card(server, reader, auditor, keys):
    lock_user_pin(reader, "card-V1")
    reader.enroll("card-V2", {USER: "4821"})
    checkpoints.sign_checkpoint(server.store, keys, NOW)
    note = auditor.audit.GetCheckpoint(apb.GetCheckpointRequest(), timeout=10).note
    answers = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(checkpoints=[note]), timeout=60))
    assert answers[-1].WhichOneof("kind") == "report" and all(a.WhichOneof("kind") == "progress" for a in answers[:-1])
    assert {a.progress.phase for a in answers[:-1]} >= {"positions", "cards", "terminals", "checkpoints"}
    report = answers[-1].report
    assert report.intact and not report.problems and report.cards_checked == 2
    assert report.checkpoints_checked == len(checkpoints.stored(server.store)) + 1  # the store's own and the one supplied
    assert report.events_checked == report.head_position > 0
    one = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(card_id="card-V1"), timeout=30))[-1].report
    assert one.intact and one.events_checked == 6
    # A database writer unlocks the PIN in the projection: the MAC names the card.
    with server.store.writer.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE pin_states SET status = 'active', consecutive_failures = 0, remaining_tries = 3, locked_at = NULL "
            "WHERE card_id = 'card-V1'"
        )
    report = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(), timeout=60))[-1].report
    assert not report.intact
    assert report.first_problem.kind == apb.INTEGRITY_PROBLEM_KIND_MAC and report.first_problem.stream_id == "card-V1"
    one = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(card_id="card-V1"), timeout=30))[-1].report
    assert {p.kind for p in one.problems} == {apb.INTEGRITY_PROBLEM_KIND_MAC, apb.INTEGRITY_PROBLEM_KIND_PROJECTION}
    clean = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(card_id="card-V2"), timeout=30))[-1].report
    assert clean.intact
    # A checkpoint that does not verify is reported, not trusted.
    forged = note.replace(note.splitlines()[1], str(int(note.splitlines()[1]) + 1), 1)
    report = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(checkpoints=[forged]), timeout=60))[-1].report
    assert apb.INTEGRITY_PROBLEM_KIND_SUPPLIED_CHECKPOINT in {p.kind for p in report.problems}
    with pytest.raises(grpc.RpcError) as err:
        list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(card_id="card-none"), timeout=30))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "checkpoints" in invalid(
        lambda: list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(card_id="card-V1", checkpoints=[note]), timeout=30))
    )


def test_a_request_id_is_never_needed_and_each_audit_read_gets_its_own(reader, auditor):
    reader.enroll("card-R1", {USER: "4821"})
    reader.enroll("card-R2", {USER: "4821"})
    for card in ("card-R1", "card-R2"):  # two reads (the same one again within the window is counted: docs/audit.md)
        auditor.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id=card), timeout=10)
    reads = auditor.audit.QueryEvents(apb.QueryEventsRequest(filter=apb.EventFilter(event_types=["AuditRead"])), timeout=10)
    ids = [e.request_id for e in reads.events]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(uuid.UUID(i) for i in ids)
