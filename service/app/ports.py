"""The ports the app layer needs from a store: a unit of work (one
transaction) and the records it exchanges. service/store implements them on
SQLite and PostgreSQL; tests/unit/fakes.py in memory."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..domain.events import Event
from ..domain.repeats import Repeats
from ..domain.state import CardState
from ..domain.throttle import TerminalWindow
from ..keys.ring import IntegrityKeys, KeyRing, SecretRef, Verifier
from ..runtime.clock import Clock

# What every caller is told when the database fails, whichever service it
# called: the driver's text (host, port, a link) goes to the log only.
DATABASE_UNAVAILABLE = "the database is unavailable: retry later"


class StoreUnavailable(Exception):
    """The database cannot be reached; the caller should retry later."""


class IntegrityViolation(Exception):
    """What the database holds for a card does not authenticate under the
    integrity keys (it was changed outside the service): the service never
    acts on it, and the command fails with nothing appended."""

    def __init__(self, stream_id: str, reason: str):
        self.stream_id = stream_id
        self.reason = reason
        super().__init__(f"the stored state of {stream_id} fails its integrity check ({reason}); nothing was changed")

    def __reduce__(self) -> tuple[Any, ...]:  # crosses from the writer process
        return (IntegrityViolation, (self.stream_id, self.reason))


@dataclass(frozen=True)
class Envelope:
    """Who and what caused the events of one command."""

    channel: str
    terminal_id: str
    request_id: str
    occurred_at: datetime
    office: str | None = None  # a counter's office


@dataclass(frozen=True)
class StoredRequest:
    """An answer kept by request id, replayed to a retry."""

    terminal_id: str
    request_id: str
    card_id: str
    command: str
    fingerprint: str
    outcome: dict[str, Any]
    stream_version: int
    created_at: datetime | None = None  # when it was first answered (the replay window runs from it)


class UnitOfWork(Protocol):
    """One transaction: reads are cached, writes buffered until it commits."""

    leaves: list[tuple[int, bytes]]  # (position, Merkle leaf hash) of the events written, once flushed

    def prefetch(
        self,
        card_ids: Iterable[str],
        request_keys: Iterable[tuple[str, str]] = (),
        read_only: Iterable[str] = (),
        terminal_ids: Iterable[str] = (),
    ) -> None:
        """Load, in one go, the cards the batch writes (locked for this
        transaction), the cards it only reads (not locked), the terminals
        whose failure windows it decides (locked) and the answers kept for
        its request ids."""

    def terminal_window(self, terminal_id: str) -> TerminalWindow:
        """A terminal's failure window (its row locked for this transaction)."""

    def set_terminal_window(self, terminal_id: str, window: TerminalWindow) -> None: ...

    def terminal_repeats(self, terminal_id: str) -> Repeats:
        """The repeats a terminal has counted but not recorded (its row, as
        its failure window: service/domain/repeats.py)."""

    def set_terminal_repeats(self, terminal_id: str, repeats: Repeats) -> None: ...

    def card(self, card_id: str) -> CardState:
        """A card about to be written (locked for this transaction)."""

    def read_card(self, card_id: str) -> CardState:
        """A card only read (not locked)."""

    def secret(self, ref: SecretRef) -> Verifier | None: ...

    def request(self, terminal_id: str, request_id: str) -> StoredRequest | None: ...

    def append(self, card_id: str, new_events: Sequence[Event], env: Envelope) -> CardState:
        """Append to a card's stream and keep its projection; the new state."""

    def append_terminal(self, terminal_id: str, new_events: Sequence[Event], env: Envelope) -> int:
        """Append to a terminal's stream; its new version."""

    def set_secret(self, ref: SecretRef, verifier: Verifier) -> None: ...

    def remember(self, answer: StoredRequest, at: datetime) -> None: ...


class LeafSink(Protocol):
    """Told the Merkle leaves (position, leaf hash) of each committed batch's
    events: it must return at once (service/store/checkpoints.py:
    CheckpointSigner signs with them on a thread of its own, which start and
    stop run)."""

    def committed(self, leaves: Sequence[tuple[int, bytes]]) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Store(Protocol):
    def close(self) -> None: ...

    def unit_of_work(self, integrity: IntegrityKeys, *, lock_terminals: bool = False) -> AbstractContextManager[UnitOfWork]:
        """A transaction that commits when the block ends without an error.
        Terminals' rows are read unlocked, and a write of one another
        transaction changed meanwhile fails the transaction (retryable);
        with lock_terminals (a retry) they are locked when read instead."""

    def is_retryable(self, exc: BaseException) -> bool:
        """A conflict (e.g. with another instance) that a fresh attempt resolves."""

    def is_unavailable(self, exc: BaseException) -> bool:
        """The database cannot be reached."""


class StoreFactory(Protocol):
    """Opens the store a writer process writes with, and what it tells of
    the leaves it commits (service/bootstrap builds one; it is pickled into
    the process, so it must be a plain value)."""

    def __call__(self, keys: KeyRing, clock: Clock) -> tuple[Store, LeafSink | None]: ...
