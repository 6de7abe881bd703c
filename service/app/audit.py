"""The auditors' facade (AuditService): reads off the writer, on the store's
read engine in a worker thread, and the audit of the auditors: every call
is recorded on the auditor terminal's stream (an AuditRead event: the RPC,
the card or filter, how many events were returned) before its answer is
given, so an answer is never returned unrecorded.

Validation, cursors and the classification of events are domain rules
(service/domain/audit.py); the SQL is service/store/audit_reads.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from ..domain.audit import (
    MAX_POSITION,
    MAX_PROOF_PAGE_SIZE,
    MAX_SUPPLIED_CHECKPOINTS,
    Cursor,
    Filter,
    Granularity,
    Order,
    Seal,
    Statistics,
    check_consistency_sizes,
    check_proof_position,
    check_tree_size,
    decode_cursor,
    encode_cursor,
    page_size,
    top_terminals,
    validate_filter,
    validate_position,
    validate_statistics_range,
)
from ..domain.card_ids import validate_card_id
from ..domain.errors import AtCapacity, FieldViolation, InvalidInput, NotFound, OutOfRange
from ..domain.events import AuditRead
from ..domain.integrity import Progress, Report
from ..domain.log import LoggedEvent
from ..domain.merkle import InclusionProof, LeafProof
from .handlers import Caller, RecordTerminalEvents
from .log_follower import PAGE as WATCH_PAGE
from .log_follower import STOPPING, LogFollower
from .log_signal import LogSignal
from .ports import DATABASE_UNAVAILABLE, StoreUnavailable
from .service import PinLife

log = structlog.get_logger()
T = TypeVar("T")


class AuditReads(Protocol):
    """What the audit needs of a store (service/store/audit_reads.py), in the domain's values."""

    def card_version(self, card_id: str) -> int | None: ...
    def card_history(self, card_id: str, f: Filter, order: Order, after_version: int | None, limit: int) -> list[LoggedEvent]: ...
    def query_events(self, f: Filter, order: Order, after: tuple[datetime, int] | None, limit: int) -> list[LoggedEvent]: ...
    def read_all(self, after_position: int, limit: int) -> list[LoggedEvent]: ...
    def head_position(self) -> int: ...
    def statistics(self, start: datetime, end: datetime, granularity: Granularity, top: int) -> Statistics: ...
    def checkpoint(self) -> tuple[str, str] | None: ...
    def verify(self, card_id: str | None, notes: Sequence[str], progress: Progress, cancelled: Callable[[], bool]) -> Report: ...
    def signed_sizes(self, sizes: Sequence[int]) -> tuple[int, frozenset[int]]: ...
    def inclusion_proof(self, index: int, size: int) -> InclusionProof: ...
    def consistency_proof(self, first: int, second: int) -> list[bytes]: ...
    def leaf_proofs(self, events: Sequence[LoggedEvent], size: int) -> dict[int, LeafProof]: ...


@dataclass(frozen=True)
class Page:
    """A page of events (GetCardHistory, QueryEvents) and the token of the next."""

    events: list[LoggedEvent]
    next_token: str
    stream_version: int = 0
    proofs: dict[int, LeafProof] = field(default_factory=dict)  # by position, with_proofs
    proof_tree_size: int = 0


INTEGRITY_RETRY = timedelta(seconds=30)  # what a refused whole-store check is told to wait
FELL_BEHIND = "this watch fell behind the log: watch again after position {position}"
WATCH_RETRY = timedelta(seconds=10)  # what a watcher refused at capacity is told to wait


class Audit:
    def __init__(
        self,
        reads: AuditReads,
        app: PinLife,
        seal: Seal,
        is_unavailable: Callable[[BaseException], bool],
        signal: LogSignal | None = None,
        *,
        max_integrity_runs: int = 1,
        max_watchers: int = 128,
        max_watchers_per_terminal: int = 4,
    ):
        self.reads = reads
        self.app = app
        self.seal = seal  # page tokens are sealed with it (the integrity keys)
        self._is_unavailable = is_unavailable
        self.signal = signal or LogSignal()
        self.max_integrity_runs = max_integrity_runs
        self.integrity_runs = asyncio.Semaphore(max_integrity_runs)  # whole-store checks running on this instance
        self._pending: set[asyncio.Task[None]] = set()  # records of calls that ended early
        self.max_watchers, self.max_watchers_per_terminal = max_watchers, max_watchers_per_terminal
        self._watching: dict[str, int] = {}  # watchers by terminal
        self.follower = LogFollower(
            lambda after, limit: self._read(self.reads.read_all, after, limit),
            lambda: self._read(self.reads.head_position),
            self.signal,
        )

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:
            if self._is_unavailable(exc):
                log.warning("audit_store_unavailable", error=type(exc).__name__, detail=str(exc)[:500])
                raise StoreUnavailable(DATABASE_UNAVAILABLE) from exc
            raise

    async def record(self, caller: Caller, rpc: str, card_id: str, filter: dict[str, Any], returned: int) -> None:
        """The audit of the auditors: one AuditRead on the caller's terminal stream."""
        event = AuditRead(rpc, card_id, json.dumps(filter, sort_keys=True, separators=(",", ":")), returned)
        await self.app.writer.submit(RecordTerminalEvents(str(uuid.uuid4()), (event,)), caller)

    @contextlib.asynccontextmanager
    async def _refusal_recorded(self, caller: Caller, rpc: str, card_id: str = "") -> AsyncIterator[None]:
        """A call refused as bad input is recorded too (its card only if it is a valid card id)."""
        try:
            yield
        except InvalidInput as exc:
            try:
                card_id = validate_card_id(card_id) if card_id else ""
            except InvalidInput:
                card_id = ""  # never record what may be an Individual Number
            kind = "out_of_range" if isinstance(exc, OutOfRange) else "invalid_argument"
            refused = {"refused": kind, "fields": [v.field for v in exc.violations]}
            await self.record(caller, rpc, card_id, refused, 0)
            raise

    async def history(
        self, caller: Caller, card_id: str, f: Filter, order: Order, size: int, token: str, proofs: int | None = None
    ) -> Page:
        """A page of the card's events; with `proofs` (a signed tree size, 0:
        the latest), each event in that tree with its leaf and inclusion proof."""
        async with self._refusal_recorded(caller, "GetCardHistory", card_id):
            card_id = validate_card_id(card_id)
            f = validate_filter(f)
            size = page_size(size)
            query = {"rpc": "GetCardHistory", "card": card_id, "order": order.value, "filter": f.as_dict()}
            cursor = decode_cursor(token, query, (int,), self.seal)
            if proofs is not None:
                if size > MAX_PROOF_PAGE_SIZE:
                    raise InvalidInput(FieldViolation("page_size", f"at most {MAX_PROOF_PAGE_SIZE} with proofs"))
                proofs = await self._signed_tree("proof_tree_size", proofs, latest_if_zero=True)
        after = None if cursor is None else cursor.key[0]
        version = await self._read(self.reads.card_version, card_id)
        if version is None:
            await self.record(caller, "GetCardHistory", card_id, f.as_dict(), 0)
            raise NotFound(f"card {card_id} is not enrolled")
        events = await self._read(self.reads.card_history, card_id, f, order, after, size + 1)
        more = len(events) > size
        events = events[:size]
        next_token = encode_cursor(Cursor((events[-1].version,)), query, self.seal) if more else ""
        leaf_proofs = await self._read(self.reads.leaf_proofs, events, proofs) if proofs else {}
        recorded = f.as_dict() | ({"proof_tree_size": proofs} if proofs else {})
        await self.record(caller, "GetCardHistory", card_id, recorded, len(events))
        return Page(events, next_token, version, leaf_proofs, proofs or 0)

    async def _signed_tree(self, field_name: str, size: int, *, latest_if_zero: bool = False) -> int:
        """`size` if the server signed a checkpoint of that size (InvalidInput,
        OutOfRange otherwise); 0 with latest_if_zero: the latest one's."""
        asked = [size] if 1 <= size <= MAX_POSITION else []
        latest, signed = await self._read(self.reads.signed_sizes, asked)
        if size == 0 and latest_if_zero:
            if not latest:
                raise OutOfRange(FieldViolation(field_name, "no checkpoint has been signed yet"))
            return latest
        check_tree_size(field_name, size, latest, size in signed)
        return size

    async def inclusion_proof(self, caller: Caller, position: int, tree_size: int) -> InclusionProof:
        """The audit path of the event at `position` in the signed tree of `tree_size`."""
        async with self._refusal_recorded(caller, "GetInclusionProof"):
            validate_position(position, "position")
            await self._signed_tree("tree_size", tree_size)
            check_proof_position(position, tree_size)
        proof = await self._read(self.reads.inclusion_proof, position - 1, tree_size)
        await self.record(caller, "GetInclusionProof", "", {"position": position, "tree_size": tree_size}, 1)
        return proof

    async def consistency_proof(self, caller: Caller, first: int, second: int) -> list[bytes]:
        """The consistency path from the signed tree of `first` to that of `second`."""
        async with self._refusal_recorded(caller, "GetConsistencyProof"):
            latest, signed = await self._read(self.reads.signed_sizes, [n for n in (first, second) if 1 <= n <= MAX_POSITION])
            violations = []
            for name, n in (("first_size", first), ("second_size", second)):
                try:
                    check_tree_size(name, n, latest, n in signed)
                except InvalidInput as exc:
                    violations.append(exc)
            if violations:  # every field named; OUT_OF_RANGE only if each is past the latest
                if all(isinstance(v, OutOfRange) for v in violations):
                    raise OutOfRange([x for v in violations for x in v.violations])
                raise InvalidInput([x for v in violations for x in v.violations])
            check_consistency_sizes(first, second)
        path = await self._read(self.reads.consistency_proof, first, second)
        await self.record(caller, "GetConsistencyProof", "", {"first_size": first, "second_size": second}, 0)
        return path

    async def query(self, caller: Caller, f: Filter, order: Order, size: int, token: str) -> Page:
        async with self._refusal_recorded(caller, "QueryEvents"):
            f = validate_filter(f)
            size = page_size(size)
            query = {"rpc": "QueryEvents", "order": order.value, "filter": f.as_dict()}
            cursor = decode_cursor(token, query, (datetime, int), self.seal)
        after = None if cursor is None else cursor.key
        events = await self._read(self.reads.query_events, f, order, after, size + 1)
        more = len(events) > size
        events = events[:size]
        last = Cursor((events[-1].occurred_at.isoformat(), events[-1].position)) if more else None
        next_token = encode_cursor(last, query, self.seal) if last else ""
        await self.record(caller, "QueryEvents", "", f.as_dict(), len(events))
        return Page(events, next_token)

    async def statistics(
        self, caller: Caller, start: datetime | None, end: datetime | None, granularity: Granularity, top: int
    ) -> Statistics:
        async with self._refusal_recorded(caller, "GetStatistics"):
            start, end = validate_statistics_range(start, end, granularity)
            top = top_terminals(top)
        stats = await self._read(self.reads.statistics, start, end, granularity, top)
        filter = {"from": start.isoformat(), "to": end.isoformat(), "granularity": granularity.value, "top": top}
        await self.record(caller, "GetStatistics", "", filter, 0)
        return stats

    async def checkpoint(self, caller: Caller) -> tuple[str, str]:
        found = await self._read(self.reads.checkpoint)
        await self.record(caller, "GetCheckpoint", "", {}, 0)
        if found is None:
            raise NotFound(
                "no checkpoint has been signed yet: the server signs one every 10 s while the log grows "
                "(or no checkpoint key is configured)"
            )
        return found

    async def watch(self, caller: Caller, after_position: int) -> AsyncIterator[list[LoggedEvent]]:
        """Every event after `after_position`, in position order, a list at a
        time: those stored, then each batch as it commits (log_follower.py);
        never ends on its own. Recorded when it starts, and again when it ends
        with how many events it delivered. At most max_watchers per instance
        and max_watchers_per_terminal per terminal (AtCapacity)."""
        terminal = caller.terminal_id
        async with self._refusal_recorded(caller, "WatchEvents"):
            validate_position(after_position, "after_position")
        query: dict[str, Any] = {"after_position": after_position}
        if self.follower.watchers >= self.max_watchers or self._watching.get(terminal, 0) >= self.max_watchers_per_terminal:
            await self.record(caller, "WatchEvents", "", {**query, "refused": "at_capacity"}, 0)
            limit = self.max_watchers if self.follower.watchers >= self.max_watchers else self.max_watchers_per_terminal
            raise AtCapacity(f"{limit} watchers already follow the log here: watch again later", WATCH_RETRY)
        await self.record(caller, "WatchEvents", "", query, 0)
        self._watching[terminal] = self._watching.get(terminal, 0) + 1
        sub = await self.follower.subscribe()
        position, delivered = after_position, 0
        try:
            while position < sub.start:  # catch up on the stored events, up to where the follower took over
                events = [e for e in await self._read(self.reads.read_all, position, WATCH_PAGE) if e.position <= sub.start]
                if not events:
                    break
                position, delivered = events[-1].position, delivered + len(events)
                yield events
            while True:
                batch = await sub.queue.get()
                if batch is None:
                    raise StoreUnavailable(sub.ended or STOPPING)
                fresh = [e for e in batch if e.position > position]
                if fresh:
                    position, delivered = fresh[-1].position, delivered + len(fresh)
                    yield fresh
                if sub.cut and sub.queue.empty():
                    raise StoreUnavailable(sub.ended or FELL_BEHIND.format(position=position))
        finally:
            self.follower.unsubscribe(sub)
            self._watching[terminal] -= 1
            if not self._watching[terminal]:
                del self._watching[terminal]
            self._record_later(caller, "WatchEvents", "", {**query, "ended": "watch"}, delivered)

    async def verify(self, caller: Caller, card_id: str, notes: Sequence[str]) -> AsyncIterator[tuple[str, Any]]:
        """Yields ("progress", (phase, done, total)) while the check runs,
        then ("report", Report)."""
        async with self._refusal_recorded(caller, "VerifyIntegrity", card_id):
            if len(notes) > MAX_SUPPLIED_CHECKPOINTS:
                raise InvalidInput(FieldViolation("checkpoints", f"at most {MAX_SUPPLIED_CHECKPOINTS}"))
            card = validate_card_id(card_id) if card_id else None
            if card is not None and notes:
                raise InvalidInput(FieldViolation("checkpoints", "apply to the whole store, not to one card"))
        if card is not None and await self._read(self.reads.card_version, card) is None:
            raise NotFound(f"card {card} is not enrolled")
        filter: dict[str, Any] = {"card": card or "", "checkpoints": len(notes)}
        if card is None and self.integrity_runs.locked():
            await self.record(caller, "VerifyIntegrity", "", {**filter, "refused": "at_capacity"}, 0)
            raise AtCapacity(
                f"{self.max_integrity_runs} whole-store integrity check(s) already run on this instance: retry later",
                INTEGRITY_RETRY,
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=1000)
        cancel = threading.Event()

        def progress(phase: str, done: int, total: int) -> None:
            loop.call_soon_threadsafe(_offer, queue, ("progress", (phase, done, total)))

        async def run() -> Report:
            if card is not None:
                return await self._read(self.reads.verify, card, list(notes), progress, cancel.is_set)
            async with self.integrity_runs:
                return await self._read(self.reads.verify, card, list(notes), progress, cancel.is_set)

        task = asyncio.ensure_future(run())
        ended = False
        try:
            while not task.done() or not queue.empty():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
            report = task.result()
            ended = True
        finally:
            if not ended:  # the caller went away, or the check failed: stop it, and say which in the record
                cancel.set()
                failed = task.done() and not task.cancelled() and task.exception() is not None
                task.add_done_callback(_retrieved)
                self._record_later(
                    caller, "VerifyIntegrity", card or "", {**filter, "ended": "failed" if failed else "cancelled"}, 0
                )
        await self.record(caller, "VerifyIntegrity", card or "", filter, report.events)
        yield ("report", report)

    async def stop(self) -> None:
        """End the log follower; write the records of calls that ended early
        (before the writer stops)."""
        await self.follower.stop()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _record_later(self, caller: Caller, rpc: str, card_id: str, filter: dict[str, Any], returned: int) -> None:
        """Record from a call that is ending (cancelled): in a task of its own, kept until done."""
        task = asyncio.ensure_future(self.record(caller, rpc, card_id, filter, returned))
        self._pending.add(task)
        task.add_done_callback(self._recorded)

    def _recorded(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("audit_read_not_recorded", error=type(exc).__name__)


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A task whose result nobody waits for any more (its exception is not an error to report)."""
    if not task.cancelled():
        task.exception()


def _offer(queue: asyncio.Queue[tuple[str, Any]], item: tuple[str, Any]) -> None:
    if not queue.full():  # progress is advisory: a slow reader skips some
        queue.put_nowait(item)
