"""An event stored in an older shape, read as the current class on every
read path, over a real gRPC server on SQLite and PostgreSQL; and the
AuditService refused to every other role, each refusal recorded.

The old shape: a CardEnrolled of schema version 1 (before wards were
recorded: no "ward" in its payload), written as that release wrote it — by
the store's own write path, linked under the integrity key and the card's
MAC written — then read through GetCardHistory, QueryEvents, WatchEvents,
the projection's rebuild and VerifyIntegrity (links, MACs, projection,
lawful history, checkpoints). Stored events are never rewritten
(docs/architecture.md, "Events evolve"): the stored row keeps its shape."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from pinlife.app.ports import Envelope
from pinlife.config.access import load_access_config
from pinlife.domain.access import RPC_ROLES, Role
from pinlife.domain.chain import GENESIS_HASH, hashed_envelope, link_hash
from pinlife.domain.events import CardEnrolled
from pinlife.domain.pins import PinType
from pinlife.domain.state import CardStatus
from pinlife.domain.streams import terminal_stream
from pinlife.keys.ring import SecretRef
from pinlife.runtime.clock import ServiceClock
from pinlife.store import checkpoints
from pinlife.store.event_store import EventStore
from pinlife.v1 import audit_service_pb2 as apb
from pinlife.v1 import common_pb2 as pb
from tests.e2e.harness import Client, ThreadedServer
from tests.e2e.test_access import Pki
from tests.keys import INTEGRITY

USER, SIGNATURE = pb.PIN_TYPE_USER_CERTIFICATE, pb.PIN_TYPE_SIGNATURE
PINS = {PinType.USER_CERTIFICATE: "4821", PinType.SIGNATURE: "KX73PQ"}
OLD_CARD, NEW_CARD = "card-old-1", "card-new-1"
ENROLLED_AT = dt.datetime(2025, 3, 3, 0, 15, tzinfo=dt.UTC)  # by the release before wards
NOW = dt.datetime(2026, 12, 1, 1, 30, tzinfo=dt.UTC)  # a Tuesday, 10:30 in Tokyo
AUDITOR = "auditor-up"
WAIT_S = 20  # a bound on a hung watch, not a measured duration


@dataclass(frozen=True)
class CardEnrolledV1(CardEnrolled):
    """CardEnrolled as the release before wards wrote it: schema version 1,
    its payload only the PIN types."""

    schema_version: ClassVar[int] = 1

    def payload(self) -> dict[str, Any]:
        return {"pin_types": [t.value for t in self.pin_types]}


def write_as_the_older_release(db_url: str, keys, card_id: str) -> None:
    """The enrolment an older release made: its event in the v1 shape, with
    the PIN verifiers; the store links it and MACs the card (flush)."""
    store = EventStore(db_url)
    try:
        with store.unit_of_work(keys.integrity) as uow:
            env = Envelope("ward_office", "naka-counter-07", str(uuid.uuid4()), ENROLLED_AT)
            uow.append(card_id, [CardEnrolledV1(tuple(PINS))], env)
            for t, pin in PINS.items():
                ref = SecretRef.pin(card_id, t)
                uow.set_secret(ref, keys.make(ref, pin))
    finally:
        store.close()


@pytest.fixture
def upgraded(db_url, keys):
    """A store holding a v1 enrolment, now served by the current release."""
    write_as_the_older_release(db_url, keys, OLD_CARD)
    srv = ThreadedServer(db_url, keys, clock=ServiceClock(fixed=NOW))
    yield srv
    srv.close()


def the_stored_row_is_the_old_shape_correctly_linked(store: EventStore) -> Any:
    """The row as the older release left it, its link recomputed here from
    chain.link_hash over the v1 envelope."""
    (e,) = [x for x in store.log.stream(OLD_CARD) if x.version == 1]
    assert (e.event_type, e.schema_version, e.office) == ("CardEnrolled", 1, None)
    assert e.payload == {"pin_types": ["user_certificate", "signature"]}  # no "ward": never rewritten
    envelope = hashed_envelope(
        OLD_CARD,
        1,
        e.event_id,
        "CardEnrolled",
        1,
        ENROLLED_AT,
        None,
        "ward_office",
        "naka-counter-07",
        e.request_id,
        {"pin_types": ["user_certificate", "signature"]},
    )
    assert e.envelope() == envelope
    assert (e.prev_hash, e.key_id) == (GENESIS_HASH, INTEGRITY.current)
    assert e.hash == link_hash(INTEGRITY.key(INTEGRITY.current), GENESIS_HASH, e.position, envelope)
    return e


def watch_until(client: Client, position: int) -> list:
    """WatchEvents from the start until an event at `position` or later."""
    call = client.audit.WatchEvents(apb.WatchEventsRequest(after_position=0), timeout=WAIT_S)
    got = []
    try:
        for r in call:
            got.append(r.event)
            if r.event.position >= position:
                break
    finally:
        call.cancel()
    return got


def assert_read_as_current(e: apb.AuditEvent, stored) -> None:
    """The v1 enrolment as an auditor reads it: the current schema's typed
    payload (ward unset), the version it was stored in, the stored link."""
    assert (e.stream_id, e.version, e.position, e.event_type) == (OLD_CARD, 1, stored.position, "CardEnrolled")
    assert (e.schema_version, e.stored_schema_version) == (CardEnrolled.schema_version, 1) == (2, 1)
    assert e.payload.WhichOneof("kind") == "card_enrolled"
    assert list(e.payload.card_enrolled.pin_types) == [USER, SIGNATURE]
    assert e.payload.card_enrolled.ward == ""
    assert MessageToDict(e.payload.json) == {"pin_types": ["user_certificate", "signature"], "ward": None}
    assert (e.hash, e.prev_hash, e.key_id) == (stored.hash, GENESIS_HASH, INTEGRITY.current)
    assert (e.channel, e.terminal_id, e.office_id) == ("ward_office", "naka-counter-07", "")
    assert e.occurred_at.ToDatetime(tzinfo=dt.UTC) == ENROLLED_AT
    assert e.outcome == apb.EVENT_OUTCOME_SUCCESS


def test_a_version_1_enrolment_is_read_as_the_current_shape_on_every_read_path(upgraded, keys):
    store = upgraded.store
    stored = the_stored_row_is_the_old_shape_correctly_linked(store)
    reader, auditor = Client(upgraded.target, "reader-up"), Client(upgraded.target, AUDITOR)
    try:
        # The current release acts on the old card (its MAC and verifiers authenticate) ...
        assert reader.verify(OLD_CARD, USER, "0000").check.remaining_tries == 2
        assert reader.verify(OLD_CARD, SIGNATURE, PINS[PinType.SIGNATURE]).check.result == pb.CHECK_RESULT_OK
        # ... and writes its own enrolments in the current shape beside it.
        reader.enroll(NEW_CARD, {USER: "1111"}, request_id=str(uuid.uuid4()))
        with pytest.raises(grpc.RpcError) as err:  # enrolled once, whatever the shape it was stored in
            reader.enroll(OLD_CARD, {USER: "1111"})
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS, err.value.details()
        (new,) = [e for e in store.log.stream(NEW_CARD) if e.event_type == "CardEnrolled"]
        assert (new.schema_version, new.payload) == (2, {"pin_types": ["user_certificate"], "ward": None})

        # GetCardHistory: typed payload, the stored schema version reported, the chain intact.
        history = auditor.audit.GetCardHistory(apb.GetCardHistoryRequest(card_id=OLD_CARD), timeout=10)
        assert [e.event_type for e in history.events] == ["CardEnrolled", "PinVerificationFailed", "PinVerified"]
        assert history.stream_version == 3
        assert_read_as_current(history.events[0], stored)
        assert history.events[1].prev_hash == history.events[0].hash
        assert [e.stored_schema_version for e in history.events] == [1, 1, 1]
        # filtered by type and outcome, and paged through, the same event
        only = apb.GetCardHistoryRequest(
            card_id=OLD_CARD,
            page_size=1,
            filter=apb.EventFilter(event_types=["CardEnrolled"], outcomes=[apb.EVENT_OUTCOME_SUCCESS]),
        )
        page = auditor.audit.GetCardHistory(only, timeout=10)
        assert len(page.events) == 1 and not page.next_page_token
        assert_read_as_current(page.events[0], stored)
        newest = auditor.audit.GetCardHistory(
            apb.GetCardHistoryRequest(card_id=OLD_CARD, order=apb.ORDER_NEWEST_FIRST, page_size=2), timeout=10
        )
        last = auditor.audit.GetCardHistory(
            apb.GetCardHistoryRequest(
                card_id=OLD_CARD, order=apb.ORDER_NEWEST_FIRST, page_size=2, page_token=newest.next_page_token
            ),
            timeout=10,
        )
        assert [e.version for e in last.events] == [1]
        assert_read_as_current(last.events[0], stored)

        # QueryEvents across cards: both enrolments in the current shape, each with its stored version.
        enrolments = auditor.audit.QueryEvents(
            apb.QueryEventsRequest(filter=apb.EventFilter(event_types=["CardEnrolled"])), timeout=10
        ).events
        assert [(e.stream_id, e.schema_version, e.stored_schema_version) for e in enrolments] == [
            (OLD_CARD, 2, 1),
            (NEW_CARD, 2, 2),
        ]
        assert_read_as_current(enrolments[0], stored)
        assert all(e.payload.WhichOneof("kind") == "card_enrolled" for e in enrolments)

        # WatchEvents: from the first position, the old event first, typed as the current shape.
        head = store.log.head_position()
        watched = watch_until(auditor, head)
        assert [e.position for e in watched[:head]] == list(range(1, head + 1))
        assert_read_as_current(watched[0], stored)
        assert [(e.event_type, e.hash) for e in watched[:head]] == [(e.event_type, e.hash) for e in store.log.read_all(0, head)]

        # The projection's rebuild from the events alone: the v1 event folds to a card without a ward.
        rebuilt, projected = store.cards.rebuild(), store.cards.projection()
        assert rebuilt == projected
        old = rebuilt[OLD_CARD]
        assert (old.version, old.ward, old.status) == (3, None, CardStatus.ACTIVE)
        assert (
            set(old.pins) == set(PINS) and old.pins[PinType.USER_CERTIFICATE].consecutive_failures == 1
        )  # the wrong entry above

        # VerifyIntegrity: the card alone, then the whole store with a checkpoint kept by the auditor.
        one = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(card_id=OLD_CARD), timeout=30))[-1].report
        assert one.intact and not one.problems and one.events_checked == 3 and one.cards_checked == 1
        checkpoints.sign_checkpoint(store, keys, NOW)
        note = auditor.audit.GetCheckpoint(apb.GetCheckpointRequest(), timeout=10).note
        answers = list(auditor.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(checkpoints=[note]), timeout=60))
        assert {a.progress.phase for a in answers[:-1]} >= {"positions", "cards", "terminals", "checkpoints"}
        report = answers[-1].report
        assert report.intact and not report.problems, report
        # the supplied one and those the store keeps (the first signed when the log held only the v1 event)
        assert report.cards_checked == 2 and report.checkpoints_checked == len(checkpoints.stored(store)) + 1 >= 3
        assert report.events_checked == report.head_position == store.log.head_position() - 1  # then its own AuditRead

        # Read everywhere, written nowhere: the stored row keeps its v1 shape and its link.
        assert the_stored_row_is_the_old_shape_correctly_linked(store) == stored
    finally:
        reader.close()
        auditor.close()


# -- the AuditService refused to every other role --------------------------------------
AUDIT_CALLS = {
    "/pinlife.v1.AuditService/GetCardHistory": lambda c: c.audit.GetCardHistory(
        apb.GetCardHistoryRequest(card_id=OLD_CARD), timeout=10
    ),
    "/pinlife.v1.AuditService/QueryEvents": lambda c: c.audit.QueryEvents(apb.QueryEventsRequest(), timeout=10),
    "/pinlife.v1.AuditService/WatchEvents": lambda c: next(iter(c.audit.WatchEvents(apb.WatchEventsRequest(), timeout=10))),
    "/pinlife.v1.AuditService/VerifyIntegrity": lambda c: list(
        c.audit.VerifyIntegrity(apb.VerifyIntegrityRequest(card_id=OLD_CARD), timeout=30)
    ),
    "/pinlife.v1.AuditService/GetCheckpoint": lambda c: c.audit.GetCheckpoint(apb.GetCheckpointRequest(), timeout=10),
    "/pinlife.v1.AuditService/GetStatistics": lambda c: c.audit.GetStatistics(
        apb.GetStatisticsRequest(**{"from": _ts(NOW - dt.timedelta(hours=1)), "to": _ts(NOW + dt.timedelta(hours=1))}), timeout=10
    ),
    "/pinlife.v1.AuditService/GetInclusionProof": lambda c: c.audit.GetInclusionProof(
        apb.GetInclusionProofRequest(position=1, tree_size=1), timeout=10
    ),
    "/pinlife.v1.AuditService/GetConsistencyProof": lambda c: c.audit.GetConsistencyProof(
        apb.GetConsistencyProofRequest(first_size=1, second_size=1), timeout=10
    ),
}
CARD_NAMED = {"/pinlife.v1.AuditService/GetCardHistory", "/pinlife.v1.AuditService/VerifyIntegrity"}
OTHER_ROLES = [r for r in Role if r not in (Role.AUDITOR, Role.DEVELOPMENT)]


def _ts(at: dt.datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(at)
    return t


def access_file(pki: Pki) -> Any:
    """One terminal per (role, audit RPC), so that each refusal is the first
    of its terminal's window (recorded on its own, not only counted)."""
    entries = []
    for role in OTHER_ROLES:
        office = 'office = "naka-ward-office"\n' if role in (Role.WARD_OFFICE, Role.SPECIAL_CENTER) else ""
        for j in range(len(AUDIT_CALLS)):
            entries.append(f'[terminals.{role.value}-{j}]\nrole = "{role.value}"\n{office}')
    text = '[tls]\ncert = "server.pem"\nkey = "server-key.pem"\nclient_ca = "terminal-ca.pem"\n\n'
    text += "\n".join(entries) + f'\n[terminals.{AUDITOR}]\nrole = "auditor"\n'
    path = pki.dir / "access.toml"
    path.write_text(text)
    return path


def test_every_audit_rpc_is_refused_to_every_other_role_and_each_refusal_recorded(db_url, keys, tmp_path):
    assert {rpc for rpc in RPC_ROLES if rpc.startswith("/pinlife.v1.AuditService/")} == set(AUDIT_CALLS)
    write_as_the_older_release(db_url, keys, OLD_CARD)  # a card to name
    pki = Pki(tmp_path)
    path = access_file(pki)
    srv = ThreadedServer(db_url, keys, clock=ServiceClock(fixed=NOW), access=load_access_config(path), access_file=path)
    clients: list[Client] = []
    try:
        head = srv.store.log.head_position()
        for role in OTHER_ROLES:
            for j, (rpc, call) in enumerate(AUDIT_CALLS.items()):
                terminal = f"{role.value}-{j}"
                client = Client(srv.target, credentials=pki.credentials(terminal))
                clients.append(client)
                with pytest.raises(grpc.RpcError) as err:
                    call(client)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, (role, rpc, err.value.details())
                (denied,) = srv.store.log.stream(terminal_stream(terminal))
                assert (denied.event_type, denied.terminal_id, denied.channel) == ("AccessDenied", terminal, role.value)
                assert denied.payload == {
                    "rpc": rpc,
                    "role": role.value,
                    "card_id": OLD_CARD if rpc in CARD_NAMED else "",
                    "repeated": 0,
                }
        # Nothing was read for them: one AccessDenied per call, no AuditRead anywhere.
        log = srv.store.log.read_all(head, 10_000)
        assert [e.event_type for e in log] == ["AccessDenied"] * len(OTHER_ROLES) * len(AUDIT_CALLS)
        # A second refusal in the same window is counted, not recorded on its own.
        again = clients[0]
        with pytest.raises(grpc.RpcError) as err:
            AUDIT_CALLS["/pinlife.v1.AuditService/QueryEvents"](again)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert len(srv.store.log.stream(terminal_stream(f"{OTHER_ROLES[0].value}-0"))) == 1
        # The auditor, on the same server, is served, and its call recorded as an AuditRead.
        auditor = Client(srv.target, credentials=pki.credentials(AUDITOR))
        clients.append(auditor)
        refusals = auditor.audit.QueryEvents(
            apb.QueryEventsRequest(filter=apb.EventFilter(event_types=["AccessDenied"]), page_size=1000), timeout=10
        )
        assert len(refusals.events) == len(OTHER_ROLES) * len(AUDIT_CALLS)
        assert {e.payload.access_denied.rpc for e in refusals.events} == set(AUDIT_CALLS)
        assert all(e.outcome == apb.EVENT_OUTCOME_REFUSED for e in refusals.events)
        (read,) = srv.store.log.stream(terminal_stream(AUDITOR))
        assert (read.event_type, read.payload["rpc"]) == ("AuditRead", "QueryEvents")
        assert srv.store.integrity.first_broken_link(INTEGRITY) is None
    finally:
        for c in clients:
            c.close()
        srv.close()
