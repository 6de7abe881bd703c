"""A terminal's throttle state is authenticated (issue 22, item 7): its row
(failure window, end of throttle, stream head) carries a MAC under the
integrity key, written with every write of the row. Someone who can write
the database but holds no key (the service's own PostgreSQL role may update
`terminals`) cannot reset a terminal's window: a row that does not
authenticate refuses that terminal's every command (IntegrityViolation,
DATA_LOSS over gRPC) with nothing appended, logs an integrity violation, and
`pinlife check` names it. Other terminals are served as before."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update
from structlog.testing import capture_logs

from pinlife.app.batch import ThreadRunner
from pinlife.app.handlers import Caller
from pinlife.app.ports import IntegrityViolation
from pinlife.domain.chain import GENESIS_HASH
from pinlife.domain.policy import Policy, ThrottlePolicy
from pinlife.domain.throttle import Throttled
from pinlife.store.check import check_store
from pinlife.store.event_store import EventStore
from pinlife.store.migrate import terminals_lack_macs, upgrade
from pinlife.store.rechain import seal_terminals, unsealed_terminals
from pinlife.store.tables import events, terminals
from tests.store.helpers import CORRECT, USER, WRONG, enroll, one_by_one, run, run_ok, verify

THROTTLE = ThrottlePolicy(max_distinct_cards=3, window=timedelta(minutes=10), penalty=timedelta(minutes=15))
READER = Caller("medical_reader", "reader-attacked")
STREAM = "terminal:reader-attacked"
OTHER = Caller("medical_reader", "reader-other")


@pytest.fixture
def writer(store, keys, clock) -> ThreadRunner:
    return ThreadRunner(store, keys, clock, Policy(throttle=THROTTLE))


def _fail_on(writer, *card_ids: str) -> list:
    return one_by_one(writer, *(verify(c, USER, WRONG[USER]) for c in card_ids), caller=READER)


def _set(store, **values) -> None:
    """As the database-level attacker: an UPDATE of the terminal's row."""
    with store.writer.begin() as conn:
        n = conn.execute(update(terminals).where(terminals.c.terminal_id == READER.terminal_id).values(**values)).rowcount
    assert n == 1


def _row(store) -> dict:
    with store.reader.connect() as conn:
        return dict(conn.execute(select(terminals).where(terminals.c.terminal_id == READER.terminal_id)).one()._mapping)


@pytest.fixture
def cards(writer):
    ids = [f"card-{i}" for i in range(8)]
    run_ok(writer, *(enroll(c) for c in ids))
    return ids


def _assert_refused(store, writer, card_id: str) -> None:
    """The terminal's next command is refused for its row's integrity, and nothing is appended."""
    head = store.log.head_position()
    with capture_logs() as logs:
        (refused,) = run(writer, verify(card_id, USER, CORRECT[USER]), caller=READER)
    assert isinstance(refused, IntegrityViolation), refused
    assert refused.stream_id == STREAM and "throttle state does not match its MAC" in str(refused)
    assert store.log.head_position() == head
    assert any(e["event"] == "integrity_violation" and e.get("stream") == STREAM for e in logs), logs


def test_rows_the_service_writes_authenticate_and_the_check_finds_nothing(store, writer, keys, cards):
    """The throttle works as before with the MAC: the fourth distinct card
    throttles, and every row written on the way (made, window grown,
    throttle started, access events appended) authenticates."""
    results = _fail_on(writer, *cards[:5])
    assert all(not isinstance(r, BaseException) for r in results[:4]), results
    assert isinstance(results[4], Throttled)
    row = _row(store)
    assert row["throttled_until"] is not None and row["mac"].startswith(f"{keys.integrity.current}:")
    report = check_store(store, keys)
    assert report.intact and report.terminals_failing_mac == [] and report.terminals_failing_mac_count == 0


def test_the_rebuild_by_pages_skips_terminal_streams_and_equals_the_projection(store, writer, cards):
    """Terminal streams sit among the card streams in stream order: folded a
    few events a page (a card's events split over pages), the rebuild gives
    each card once, in card-id order, as the projection holds it."""
    _fail_on(writer, *cards[:5])
    with store.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events).where(events.c.stream_id == STREAM)).scalar_one() > 0
    live = sorted(store.cards.projection().items())
    assert len(live) == len(cards)
    for batch in (1, 2, 3, 7, 1000):
        assert list(store.cards.rebuilt(batch)) == live


@pytest.mark.parametrize(
    "tamper",
    [
        "window cleared",
        "window shrunk",
        "throttle lifted",
        "head rewound",
        "mac cleared",
        "another terminal's row copied",
        "window not JSON",
    ],
)
def test_a_terminal_whose_row_was_changed_outside_the_service_is_refused_and_named_by_the_check(
    store, writer, keys, cards, tamper
):
    _fail_on(writer, *cards[:3])  # three distinct cards failed: one more throttles
    row = _row(store)
    if tamper == "window cleared":
        _set(store, throttle_failures=None)
    elif tamper == "window shrunk":
        window = json.loads(row["throttle_failures"])
        _set(store, throttle_failures=json.dumps(dict(list(window.items())[:1])))
    elif tamper == "throttle lifted":
        _fail_on(writer, cards[3])  # now throttled
        assert _row(store)["throttled_until"] is not None
        _set(store, throttled_until=None)
    elif tamper == "head rewound":
        _fail_on(writer, cards[3])  # throttled: its stream has an event
        assert _row(store)["version"] == 1
        _set(store, version=0, last_hash=GENESIS_HASH)
    elif tamper == "mac cleared":
        _set(store, throttle_failures=None, mac=None)
    elif tamper == "another terminal's row copied":
        one_by_one(writer, verify(cards[7], USER, WRONG[USER]), caller=OTHER)  # a row of its own, one card in its window
        with store.reader.connect() as conn:
            other = conn.execute(select(terminals).where(terminals.c.terminal_id == OTHER.terminal_id)).one()
        _set(store, version=other.version, last_hash=other.last_hash, throttle_failures=other.throttle_failures, mac=other.mac)
    elif tamper == "window not JSON":
        _set(store, throttle_failures="{not json")

    _assert_refused(store, writer, cards[5])
    (refused,) = run(writer, verify(cards[6], USER, WRONG[USER]), caller=READER)  # a further failure is not counted either
    assert isinstance(refused, IntegrityViolation)
    (served,) = run_ok(writer, verify(cards[1], USER, CORRECT[USER]), caller=OTHER)  # other terminals are served
    assert served.outcome.result.value == "ok"

    report = check_store(store, keys)
    assert not report.intact
    assert report.terminals_failing_mac == [STREAM] and report.terminals_failing_mac_count == 1
    assert report.cards_failing_mac == []


def test_a_status_read_of_a_tampered_terminal_is_refused_too(store, writer, cards):
    """GetPinStatus misses count toward the throttle: a reset window refuses them as well."""
    from pinlife.app.handlers import ReadCard

    _fail_on(writer, *cards[:2])
    _set(store, throttle_failures=None)
    (refused,) = writer.process([(ReadCard("card-unknown"), READER)])
    assert isinstance(refused, IntegrityViolation) and refused.stream_id == STREAM


def test_a_terminal_s_row_made_on_a_retry_with_the_rows_locked_authenticates(store, keys):
    """The retry path (lock_terminals) inserts the rows of terminals not yet
    seen before it locks them: each is made with the MAC of its empty state."""
    with store.unit_of_work(keys.integrity, lock_terminals=True) as uow:
        uow.prefetch((), terminal_ids=[READER.terminal_id, "reader-other"])
    assert _row(store)["mac"] is not None
    with store.unit_of_work(keys.integrity) as uow:
        uow.prefetch((), terminal_ids=[READER.terminal_id, "reader-other"])  # authenticates
        assert uow.terminal_window(READER.terminal_id).last_failure == {}
    assert check_store(store, keys).intact


def test_the_mac_is_under_the_integrity_key_not_a_plain_hash(store, writer, keys, cards):
    """A MAC recomputed without the key (another key id, or a plain hash) does not authenticate."""
    import hashlib

    from pinlife.keys.ring import IntegrityKeys
    from pinlife.store.projection import terminal_message, window_from_row

    _fail_on(writer, *cards[:2])
    row = _row(store)
    forged_window = window_from_row(None, None, lambda v: v)
    message = terminal_message(READER.terminal_id, row["version"], row["last_hash"], forged_window)
    other_key = IntegrityKeys(keys.integrity.current, {keys.integrity.current: b"k" * 32})
    for forged in (other_key.tag(message), f"{keys.integrity.current}:{hashlib.sha256(message).hexdigest()}"):
        _set(store, throttle_failures=None, mac=forged)
        _assert_refused(store, writer, cards[5])


def test_a_store_from_before_terminal_macs_is_sealed_by_the_migrate_run_that_adds_them(databases, backend, keys, clock):
    """Rows written before migration 0009 have no MAC. The `pinlife migrate`
    run that adds the column seals them as they are (a throttled terminal
    stays throttled); until sealed, such a terminal is refused. Once the
    column exists, a later migrate does not seal (terminals_lack_macs is
    false): a MAC cleared by an attacker is never blessed by a deployment."""
    url = databases.create(backend, migrate=False)
    upgrade(url, "0008")
    until = clock.now + timedelta(minutes=5)
    with _owner(url) as conn:
        conn.execute(
            text(
                "INSERT INTO terminals (terminal_id, version, last_hash, throttle_failures, throttled_until, revision)"
                " VALUES ('reader-attacked', 0, :g, NULL, :until, 3), ('reader-idle', 0, :g, :w, NULL, 1)"
            ),
            {"g": GENESIS_HASH, "until": until, "w": json.dumps({"card-x": clock.now.isoformat()})},
        )
    assert terminals_lack_macs(url)
    upgrade(url)
    assert not terminals_lack_macs(url)
    store = EventStore(url)
    try:
        writer = ThreadRunner(store, keys, clock, Policy(throttle=THROTTLE))
        run_ok(writer, enroll("card-1"))
        assert unsealed_terminals(store)
        (refused,) = run(writer, verify("card-1", USER, CORRECT[USER]), caller=READER)
        assert isinstance(refused, IntegrityViolation)
        assert check_store(store, keys).terminals_failing_mac == ["terminal:reader-attacked", "terminal:reader-idle"]

        assert seal_terminals(store, keys.integrity) == 2
        assert not unsealed_terminals(store) and seal_terminals(store, keys.integrity) == 0
        (throttled,) = run(writer, verify("card-1", USER, CORRECT[USER]), caller=READER)
        assert isinstance(throttled, Throttled)  # sealed as it was: still throttled
        idle = Caller("medical_reader", "reader-idle")
        assert run_ok(writer, verify("card-1", USER, CORRECT[USER]), caller=idle)[0].outcome.result.value == "ok"
        assert check_store(store, keys).intact
    finally:
        store.close()


class _owner:
    """A plain connection in a transaction, as the schema owner writes before the service runs."""

    def __init__(self, url: str):
        from pinlife.store.engine import make_engine

        self._engine = make_engine(url, pool_size=1)

    def __enter__(self):
        self._ctx = self._engine.begin()
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        try:
            return self._ctx.__exit__(*exc)
        finally:
            self._engine.dispose()
