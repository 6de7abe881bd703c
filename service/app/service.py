"""The application facade the adapters call: commands go through the group
commit writer (after the terminal throttle); status reads go through it too,
answered inside a batch's transaction (in the writer process that saves
this process a thread hop and a contended interpreter lock per read);
access refusals and throttling are recorded in the terminal's stream."""

from __future__ import annotations

import structlog

from service.app.answers import Answer
from service.app.handlers import Caller, ReadCard, RecordTerminalEvents
from service.app.writer import GroupCommitWriter
from service.clock import Clock
from service.domain.card_ids import validate_card_id
from service.domain.commands import Command
from service.domain.errors import InvalidInput, NotFound
from service.domain.events import AccessDenied, TerminalThrottled
from service.domain.pins import PinType
from service.domain.policy import Policy
from service.domain.recovery import Recovery, recovery_for
from service.domain.requests import validate_request_id
from service.domain.state import CardState
from service.domain.throttle import FailureTracker, is_failure

log = structlog.get_logger()


class PinLife:
    """Wired by service/app/bootstrap.py."""

    def __init__(self, writer: GroupCommitWriter, clock: Clock, policy: Policy):
        self.clock = clock
        self.writer = writer
        self.policy = policy
        self.tracker = FailureTracker(policy.throttle)

    def recovery(self, card: CardState, pin_type: PinType) -> Recovery:
        """The way out for a locked PIN or a suspended card, now."""
        return recovery_for(card, pin_type, self.policy, self.clock())

    async def start(self) -> None:
        await self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()

    async def can_write(self) -> bool:
        """Whether commands can be written now (the server's health loop asks
        this every second; a writer process that died cannot)."""
        return await self.writer.alive()

    async def execute(self, cmd: Command, caller: Caller) -> Answer:
        """Refused (Throttled) while the terminal is throttled; failures on a
        card (wrong, locked, unknown card) count towards the throttle."""
        self.tracker.check(caller.terminal_id, self.clock())
        try:
            answer = await self.writer.submit(cmd, caller)
        except NotFound:
            await self._count_failure(cmd, caller)
            raise
        if is_failure(answer.outcome) and not answer.replayed:
            await self._count_failure(cmd, caller)
        return answer

    async def _count_failure(self, cmd: Command, caller: Caller) -> None:
        now = self.clock()
        distinct = self.tracker.record_failure(caller.terminal_id, cmd.card_id, now)
        if distinct is None:
            return
        until = self.tracker.throttled_until(caller.terminal_id)
        log.warning("terminal_throttled", distinct_cards=distinct, until=until.isoformat())
        event = TerminalThrottled(distinct, int(self.tracker.policy.window.total_seconds()), until.isoformat())
        await self.writer.submit(RecordTerminalEvents(cmd.request_id, (event,)), caller)

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
        event = AccessDenied(rpc, caller.channel, card_id)
        await self.writer.submit(RecordTerminalEvents(request_id, (event,)), caller)

    async def card_status(self, card_id: str, caller: Caller) -> CardState:
        """Costs no try and records nothing; sees every command answered
        before it on this instance."""
        validate_card_id(card_id)
        state = await self.writer.submit(ReadCard(card_id), caller)
        if state is None:
            raise NotFound(f"card {card_id} is not enrolled")
        return state
