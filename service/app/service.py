"""The application facade the adapters call: commands go through the group
commit writer, whose handlers also decide the terminal throttle inside the
transaction (handlers.py); status reads go through it too, answered inside
a batch's transaction (in the writer process that saves this process a
thread hop and a contended interpreter lock per read); access refusals are
recorded in the terminal's stream, aggregated so that no caller can grow
the log without bound."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import overload

import structlog

from ..domain.card_ids import validate_card_id
from ..domain.commands import (
    CardCommand,
    ChangePin,
    CompleteProxyReset,
    EnrollCard,
    RequestProxyReset,
    ReserveStoreReset,
    ResetPin,
    ResumeCard,
    StoreResetPin,
    SuspendCard,
    UnlockPin,
    VerifyPin,
)
from ..domain.errors import InvalidInput, NotFound
from ..domain.events import AccessDenied
from ..domain.outcomes import (
    CardStatusChanged,
    CheckOutcome,
    Enrolled,
    InquiryIssued,
    Outcome,
    PinRestored,
    ProxyCompletion,
    StoreReservation,
    StoreReset,
)
from ..domain.pins import PinType
from ..domain.policy import Policy
from ..domain.recovery import CardView
from ..domain.requests import validate_request_id
from ..runtime.clock import Clock
from .answers import Answer
from .handlers import Caller, ReadCard, RecordTerminalEvents
from .writer import GroupCommitWriter

log = structlog.get_logger()


class PinLife:
    """Wired by service/bootstrap/instance.py."""

    def __init__(self, writer: GroupCommitWriter, clock: Clock, policy: Policy):
        self.clock = clock
        self.writer = writer
        self.policy = policy
        self.refusals = Refusals(policy.throttle.window)

    async def start(self) -> None:
        await self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()

    async def can_write(self) -> bool:
        """Whether commands can be written now (the server's health loop asks
        this every second; a writer process that died cannot)."""
        return await self.writer.alive()

    @property
    def writes_failing(self) -> bool:
        """Every command of the last batch failed for no decided reason (a
        full disk, a read-only database): health then probes a write."""
        return self.writer.writes_failing

    def writes_recovered(self) -> None:
        """A write committed again (health's probe): the writer's batches may succeed."""
        self.writer.writes_failing = False

    @overload
    async def execute(self, cmd: VerifyPin | ChangePin, caller: Caller) -> Answer[CheckOutcome]: ...
    @overload
    async def execute(self, cmd: EnrollCard, caller: Caller) -> Answer[Enrolled]: ...
    @overload
    async def execute(self, cmd: ResetPin | UnlockPin, caller: Caller) -> Answer[PinRestored]: ...
    @overload
    async def execute(self, cmd: RequestProxyReset, caller: Caller) -> Answer[InquiryIssued]: ...
    @overload
    async def execute(self, cmd: CompleteProxyReset, caller: Caller) -> Answer[ProxyCompletion]: ...
    @overload
    async def execute(self, cmd: SuspendCard | ResumeCard, caller: Caller) -> Answer[CardStatusChanged]: ...
    @overload
    async def execute(self, cmd: ReserveStoreReset, caller: Caller) -> Answer[StoreReservation]: ...
    @overload
    async def execute(self, cmd: StoreResetPin, caller: Caller) -> Answer[StoreReset]: ...
    async def execute(self, cmd: CardCommand, caller: Caller) -> Answer[Outcome]:
        """The command's answer, typed by its command (its decider's outcome:
        service/domain/outcomes.py). Refused (Throttled) while the terminal is
        throttled; failures on a card (wrong, locked, unknown card) count
        towards the throttle."""
        answer: Answer[Outcome] = await self.writer.submit(cmd, caller)
        return answer

    async def record_refusal(self, caller: Caller, rpc: str, request_id: str, card_id: str) -> None:
        """Record a PERMISSION_DENIED in the terminal's stream."""
        try:
            card_id = validate_card_id(card_id)
        except InvalidInput:
            card_id = ""  # never record what may be an Individual Number
        try:
            request_id = validate_request_id(request_id)
        except InvalidInput:
            request_id = "-"
        repeated = self.refusals.admit(caller.terminal_id, self.clock())
        if repeated is None:
            return  # counted, recorded with this terminal's next AccessDenied
        event = AccessDenied(rpc, caller.channel, card_id, repeated)
        await self.writer.submit(RecordTerminalEvents(request_id, (event,)), caller)

    async def card_status(self, card_id: str, caller: Caller, only: PinType | None = None) -> CardView:
        """The card and its PINs (or one of them), each way out computed at
        the batch's instant. Costs no try and records nothing; sees every
        command answered before it on this instance."""
        validate_card_id(card_id)
        view: CardView | None = await self.writer.submit(ReadCard(card_id, only, caller.office), caller)
        if view is None:
            raise NotFound(f"card {card_id} is not enrolled")
        return view


class Refusals:
    """Aggregates a terminal's access refusals: the first in a window is
    recorded (with the count of those not recorded since the previous one);
    the rest of the window is only counted. Per instance, so at most one
    event per terminal, window and instance."""

    MAX_TERMINALS = 10_000  # bounded memory: the oldest terminal's count is dropped

    def __init__(self, window: timedelta):
        self.window = window
        self._last: dict[str, tuple[datetime, int]] = {}  # terminal -> (last recorded, not recorded since)

    def admit(self, terminal_id: str, now: datetime) -> int | None:
        """The count to record with a new AccessDenied now, or None when
        this refusal is only counted."""
        last = self._last.get(terminal_id)
        if last is not None and now - last[0] < self.window:
            self._last[terminal_id] = (last[0], last[1] + 1)
            return None
        if len(self._last) >= self.MAX_TERMINALS and terminal_id not in self._last:
            self._last.pop(next(iter(self._last)))
        self._last[terminal_id] = (now, 0)
        return 0 if last is None else last[1]
