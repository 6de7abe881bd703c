"""An in-memory store for fast tests of the app layer, without I/O.

FakeStore implements the Store port and FakeUnitOfWork the UnitOfWork port
(service/app/ports.py), mirroring service/store/unit_of_work.py: a unit of
work reads the committed data and its own buffered writes; its writes are
committed only when the unit_of_work() block ends without an exception, and
discarded otherwise. A card's state is the fold of its stream (evolve,
service/domain/state.py), as the real projection is; card and terminal
streams keep their events with version and occurred-at (UTC); PIN verifiers
and other secrets are kept by SecretRef; answers by (terminal, request id).
Not mirrored: SQL, locks (one thread at a time; `locked` records what
would be locked), the keyed chain and MACs, pruning.

A test makes the next transactions fail at commit, after their handlers ran:
store.fail_next(2, Conflict) (retryable) or store.fail_next(1, Unavailable).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pinlife.app.ports import Envelope, StoredRequest
from pinlife.domain.events import Event, Recorded
from pinlife.domain.repeats import Repeats
from pinlife.domain.state import CardState, evolve
from pinlife.domain.streams import terminal_stream
from pinlife.domain.throttle import TerminalWindow
from pinlife.keys.ring import SecretKind, SecretRef, Verifier


class Conflict(Exception):
    """A conflict with another instance: FakeStore.is_retryable."""


class Unavailable(Exception):
    """The database cannot be reached: FakeStore.is_unavailable."""


@dataclass(frozen=True)
class FakeEvent:
    """One event as its stream keeps it (the real store's LoggedEvent, shorter)."""

    position: int
    stream_id: str
    version: int
    occurred_at: datetime
    event: Event
    envelope: Envelope

    @property
    def event_type(self) -> str:
        return self.event.type_name

    @property
    def payload(self) -> dict:
        """As the real store keeps it (Event.payload(): enums by value, the PIN type in the envelope)."""
        return self.event.payload()


class FakeUnitOfWork:
    """One transaction: works on copies of the committed data, which the
    store takes over at commit (a discarded transaction leaves no trace)."""

    def __init__(self, store: FakeStore):
        self.events = list(store.events)
        self.states = dict(store.states)
        self.terminals = dict(store.terminals)  # terminal id -> version of its stream
        self.windows = dict(store.windows)  # terminal id -> its failure window
        self.repeats = dict(store.repeats)  # terminal id -> its repeats counted (service/domain/repeats.py)
        self.secrets = dict(store.secrets)
        self.requests = dict(store.requests)
        self.locked: set[str] = set()  # cards this transaction would lock
        self.leaves: list[tuple[int, bytes]] = []  # no Merkle leaves here: checkpoints are the real store's

    def prefetch(
        self,
        card_ids: Iterable[str],
        request_keys: Iterable[tuple[str, str]] = (),
        read_only: Iterable[str] = (),
        terminal_ids: Iterable[str] = (),
    ) -> None:
        self.locked.update(card_ids)  # nothing to load: every read below is served from memory
        self.locked.update(terminal_stream(t) for t in terminal_ids)

    def terminal_window(self, terminal_id: str) -> TerminalWindow:
        self.locked.add(terminal_stream(terminal_id))
        return self.windows.get(terminal_id, TerminalWindow())

    def set_terminal_window(self, terminal_id: str, window: TerminalWindow) -> None:
        self.windows[terminal_id] = window

    def terminal_repeats(self, terminal_id: str) -> Repeats:
        self.locked.add(terminal_stream(terminal_id))
        return self.repeats.get(terminal_id, {})

    def set_terminal_repeats(self, terminal_id: str, repeats: Repeats) -> None:
        self.repeats[terminal_id] = repeats

    def card(self, card_id: str) -> CardState:
        self.locked.add(card_id)
        return self.read_card(card_id)

    def read_card(self, card_id: str) -> CardState:
        return self.states.get(card_id, CardState(card_id))

    def secret(self, ref: SecretRef) -> Verifier | None:
        if ref.kind == SecretKind.PIN:
            self.card(ref.card_id)  # as the real one: PIN verifiers come with the (locked) card
        return self.secrets.get(ref)

    def request(self, terminal_id: str, request_id: str) -> StoredRequest | None:
        return self.requests.get((terminal_id, request_id))

    def _log(self, stream_id: str, version: int, event: Event, env: Envelope) -> None:
        self.events.append(FakeEvent(len(self.events) + 1, stream_id, version, env.occurred_at, event, env))

    def append(self, card_id: str, new_events: Sequence[Event], env: Envelope) -> CardState:
        env = _utc(env)
        state = self.card(card_id)
        for e in new_events:
            state = evolve(state, Recorded(e, state.version + 1, env.occurred_at))
            self._log(card_id, state.version, e, env)
        self.states[card_id] = state
        return state

    def append_terminal(self, terminal_id: str, new_events: Sequence[Event], env: Envelope) -> int:
        env = _utc(env)
        version = self.terminals.get(terminal_id, 0)
        for e in new_events:
            version += 1
            self._log(terminal_stream(terminal_id), version, e, env)
        self.terminals[terminal_id] = version
        return version

    def set_secret(self, ref: SecretRef, verifier: Verifier) -> None:
        self.secrets[ref] = verifier

    def remember(self, answer: StoredRequest, at: datetime) -> None:
        # As the real store, the answer keeps when it was given (the replay window); nothing prunes here.
        self.requests[(answer.terminal_id, answer.request_id)] = replace(answer, created_at=at)


def _utc(env: Envelope) -> Envelope:
    return replace(env, occurred_at=env.occurred_at.astimezone(UTC))  # as stored on every backend


class FakeStore:
    """The Store port in memory."""

    def __init__(self) -> None:
        self.events: list[FakeEvent] = []  # the log, in position order
        self.states: dict[str, CardState] = {}
        self.terminals: dict[str, int] = {}
        self.windows: dict[str, TerminalWindow] = {}
        self.repeats: dict[str, Repeats] = {}
        self.secrets: dict[SecretRef, Verifier] = {}
        self.requests: dict[tuple[str, str], StoredRequest] = {}
        self.locked: list[set[str]] = []  # one entry per committed transaction: the cards it locked
        self.attempts: list[bool] = []  # one entry per transaction begun: whether it locked its terminals
        self._failures: list[type[Exception]] = []
        self.log = FakeLog(self)  # the reads tests need, named as the real store's
        self.cards = FakeCards(self)

    def fail_next(self, count: int, error: type[Exception] = Conflict) -> None:
        """The next `count` transactions end in `error` at commit."""
        self._failures += [error] * count

    @contextmanager
    def unit_of_work(self, integrity=None, lock_terminals=False) -> Iterator[FakeUnitOfWork]:
        self.attempts.append(lock_terminals)
        uow = FakeUnitOfWork(self)
        yield uow  # an exception in the block propagates from here: nothing is committed
        if self._failures:
            raise self._failures.pop(0)("injected by FakeStore.fail_next")
        self.events, self.states, self.terminals, self.windows = uow.events, uow.states, uow.terminals, uow.windows
        self.repeats = uow.repeats
        self.secrets, self.requests = uow.secrets, uow.requests
        self.locked.append(uow.locked)

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, Conflict)

    def is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, Unavailable)


class FakeLog:
    """store.log, as service/store/reads.py's LogReader."""

    def __init__(self, store: FakeStore):
        self._store = store

    def stream(self, stream_id: str) -> list[FakeEvent]:
        return [e for e in self._store.events if e.stream_id == stream_id]

    def head_position(self) -> int:
        return len(self._store.events)


class FakeCards:
    """store.cards, as service/store/reads.py's CardReader."""

    def __init__(self, store: FakeStore):
        self._store = store

    def read_card(self, card_id: str) -> CardState | None:
        state = self._store.states.get(card_id)
        return state if state is not None and state.enrolled else None

    def secret(self, ref: SecretRef) -> Verifier | None:
        return self._store.secrets.get(ref)
