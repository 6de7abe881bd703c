"""One handler per kind of command, in a table (HANDLERS): replay an earlier
answer to the same request id (within the replay window), or refuse a
throttled terminal, or load state, decide, append, count a failure in the
terminal's window, store new secrets and remember the answer, all in the
caller's unit of work. A status read is answered from the same unit of work
without locking the card; a miss counts as a failure of its terminal, and a
counter's is gated by its office's hours and wards as its commands are
(decision.counter_gate). A counter refused for a ward it does not serve
counts a failure too (throttle.is_probe).

A new command is one entry: its handler and what it touches (the cards the
batch must lock or read and the request ids to look up, loaded for the
whole batch at once).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, get_args

import structlog

from ..domain import repeats, throttle
from ..domain.access import Role
from ..domain.commands import CardCommand
from ..domain.decide import decide
from ..domain.decision import Context, counter_gate
from ..domain.errors import FieldViolation, InvalidInput, NotFound
from ..domain.events import AuditRead, Event, TerminalThrottled
from ..domain.outcomes import Outcome
from ..domain.pins import PinType
from ..domain.policy import Policy
from ..domain.recovery import CardView, pin_views
from ..domain.throttle import is_failure, is_probe
from ..keys.ring import KeyRing, SecretRef
from ..runtime.ids import new_id
from .answers import Answer, command_name, decode, decode_refusal, encode, encode_refusal, fingerprint, fresh_pins
from .ports import Envelope, StoredRequest, UnitOfWork

log = structlog.get_logger()


@dataclass(frozen=True)
class Caller:
    """The authenticated terminal behind a request: its channel is its role."""

    channel: str
    terminal_id: str
    office: str | None = None  # a counter's office (hours and wards apply)
    chain: str | None = None  # a kiosk's store chain

    @property
    def role(self) -> Role:
        return Role(self.channel)


@dataclass(frozen=True)
class RecordTerminalEvents:
    """Append access events (refusals, throttling) to a terminal's stream."""

    request_id: str
    events: tuple[Event, ...]


@dataclass(frozen=True)
class ReadCard:
    """A status read (GetPinStatus): costs no try, records nothing, locks nothing."""

    card_id: str
    only: PinType | None = None  # one PIN type, or every PIN of the card
    office_id: str | None = None  # a counter's office: gated as its commands are (decision.counter_gate)


@dataclass(frozen=True)
class Deps:
    """What every handler of a batch shares."""

    keys: KeyRing
    policy: Policy
    now: datetime


class MissingVerifier(Exception):
    """A PIN type is enrolled but has no verifier: the store is damaged."""


class Touches(NamedTuple):
    """What a command needs loaded before the batch runs."""

    write_cards: tuple[str, ...] = ()
    read_cards: tuple[str, ...] = ()
    request_keys: tuple[tuple[str, str], ...] = ()
    terminals: tuple[str, ...] = ()  # whose failure windows are decided


def _new_code() -> str:
    """A one-time code to print on a mailed form: 8 random digits."""
    return f"{secrets.randbelow(10**8):08d}"


def replay(prior: StoredRequest, cmd: CardCommand, fp: str, deps: Deps) -> Answer[Outcome]:
    """The answer kept for a retry of the same request, within the replay
    window; a kept refusal is raised again (the id stays bound to its first
    request, even if the retry would now be allowed)."""
    if prior.fingerprint != fp:
        raise InvalidInput(FieldViolation("request_id", "was already used by this terminal for a different request"))
    if prior.created_at is not None and deps.now - prior.created_at > deps.policy.replay_window:
        hours = int(deps.policy.replay_window.total_seconds() // 3600)
        raise InvalidInput(FieldViolation("request_id", f"was used more than {hours} h ago; send a new request id"))
    if (refused := decode_refusal(prior.outcome)) is not None:
        raise refused
    outcome = decode(prior.outcome)
    return Answer(outcome, prior.stream_version, replayed=True, pins=fresh_pins(cmd, outcome, prior.stream_version))


def count_failure(uow: UnitOfWork, caller: Caller, card_id: str, deps: Deps) -> tuple[Event, ...]:
    """Count a failure on a card in the terminal's window; the event to
    record when it starts a throttle."""
    policy = deps.policy.throttle
    window, distinct = throttle.record_failure(uow.terminal_window(caller.terminal_id), card_id, deps.now, policy)
    uow.set_terminal_window(caller.terminal_id, window)
    if distinct is None:
        return ()
    until = window.throttled_until
    assert until is not None  # a failure that starts a throttle sets its end
    log.warning("terminal_throttled", distinct_cards=distinct, until=until.isoformat())
    return (TerminalThrottled(distinct, int(policy.window.total_seconds()), until.isoformat()),)


def unrepeated(uow: UnitOfWork, caller: Caller, stream: str, events: tuple[Event, ...], deps: Deps) -> tuple[Event, ...]:
    """The events of a stream (a card id, or "" for the terminal's own) to
    record, repeats of an aggregated event within its window counted in
    the terminal's row instead (service/domain/repeats.py); the reports of
    counts that had to make room are recorded on the terminal's stream."""
    if not any(repeats.aggregated(e) for e in events):
        return events  # the verify path: nothing to look up
    got = repeats.aggregate(uow.terminal_repeats(caller.terminal_id), stream, events, deps.now, deps.policy.repeat_window)
    uow.set_terminal_repeats(caller.terminal_id, got.repeats)
    if got.reports:
        env = Envelope(caller.channel, caller.terminal_id, "-", deps.now, caller.office)
        uow.append_terminal(caller.terminal_id, got.reports, env)
    return got.events


def handle_card_command(uow: UnitOfWork, cmd: CardCommand, caller: Caller, deps: Deps) -> Answer[Outcome]:
    fp = fingerprint(cmd)
    prior = uow.request(caller.terminal_id, cmd.request_id)
    if prior is not None:
        return replay(prior, cmd, fp, deps)
    window = uow.terminal_window(caller.terminal_id)
    throttle.check(window, caller.terminal_id, deps.now)
    env = Envelope(caller.channel, caller.terminal_id, cmd.request_id, deps.now, caller.office)

    state = uow.card(cmd.card_id)
    rekey: dict[PinType, str] = {}

    def matches(pin_type: PinType, pin: str) -> bool:
        ref = SecretRef.pin(cmd.card_id, pin_type)
        stored = uow.secret(ref)
        if stored is None:
            raise MissingVerifier(f"{cmd.card_id}/{pin_type.value}")
        ok = deps.keys.matches(stored, ref, pin)
        if ok and stored.key_id != deps.keys.current:
            rekey[pin_type] = pin  # re-key a verifier under a retired key on success
        return ok

    def code_matches(kind: str, name: str, value: str) -> bool:
        ref = SecretRef(cmd.card_id, kind, name)
        stored = uow.secret(ref)
        return stored is not None and deps.keys.matches(stored, ref, value)

    ctx = Context(deps.now, deps.policy, matches, code_matches, new_id, _new_code, window.suspensions)
    try:
        decision = decide(state, cmd, ctx)
    except NotFound:
        if throttled := count_failure(uow, caller, cmd.card_id, deps):
            uow.append_terminal(caller.terminal_id, throttled, env)
        raise
    card_events = unrepeated(uow, caller, cmd.card_id, decision.events, deps)
    new_state = uow.append(cmd.card_id, card_events, env) if card_events else state
    if (suspended := throttle.record_suspensions(window, decision.events, deps.now, deps.policy)) is not None:
        uow.set_terminal_window(caller.terminal_id, suspended)  # the terminal's bound (procedures.suspension_bound)
    terminal_events = unrepeated(uow, caller, "", decision.terminal_events, deps)
    if is_failure(decision.outcome) or is_probe(decision.terminal_events):
        terminal_events += count_failure(uow, caller, cmd.card_id, deps)
    if terminal_events:
        uow.append_terminal(caller.terminal_id, terminal_events, env)

    def keep(answer: dict[str, Any]) -> None:
        """The request's answer (or refusal), for a retry with its id to replay."""
        kept = StoredRequest(caller.terminal_id, cmd.request_id, cmd.card_id, command_name(cmd), fp, answer, new_state.version)
        uow.remember(kept, deps.now)

    if decision.error is not None:  # the refusal is recorded, and kept: a retry replays it
        if (refusal := encode_refusal(decision.error)) is not None:
            keep(refusal)
        raise decision.error
    for pin_type, pin in {**rekey, **decision.new_pins}.items():
        ref = SecretRef.pin(cmd.card_id, pin_type)
        uow.set_secret(ref, deps.keys.make(ref, pin))
    for (kind, name), value in decision.new_secrets.items():
        ref = SecretRef(cmd.card_id, kind, name)
        uow.set_secret(ref, deps.keys.make(ref, value))
    outcome = decision.answer()
    keep(encode(outcome))
    return Answer(outcome, new_state.version, pins=fresh_pins(cmd, outcome, new_state.version))


def card_command_touches(cmd: CardCommand, caller: Caller) -> Touches:
    return Touches((cmd.card_id,), (), ((caller.terminal_id, cmd.request_id),), (caller.terminal_id,))


def handle_terminal_events(uow: UnitOfWork, cmd: RecordTerminalEvents, caller: Caller, deps: Deps) -> int:
    env = Envelope(caller.channel, caller.terminal_id, cmd.request_id, deps.now, caller.office)
    if recorded := unrepeated(uow, caller, "", cmd.events, deps):
        return uow.append_terminal(caller.terminal_id, recorded, env)
    return 0  # only counted


def handle_read_card(uow: UnitOfWork, cmd: ReadCard, caller: Caller, deps: Deps) -> CardView | None:
    """The card and its PINs (or the one asked for), each locked PIN's or
    suspended card's way out computed at the batch's instant."""
    throttle.check(uow.terminal_window(caller.terminal_id), caller.terminal_id, deps.now)
    state = uow.read_card(cmd.card_id)
    if cmd.office_id is not None and (
        gate := counter_gate(cmd.card_id, state.ward, cmd.office_id, "GetPinStatus", deps.policy, deps.now)
    ):
        env = Envelope(caller.channel, caller.terminal_id, "-", deps.now, caller.office)
        refusals = unrepeated(uow, caller, "", gate.terminal_events, deps)
        if is_probe(gate.terminal_events):
            refusals += count_failure(uow, caller, cmd.card_id, deps)
        if refusals:
            uow.append_terminal(caller.terminal_id, refusals, env)
        assert gate.error is not None  # a gate refuses with an error
        raise gate.error
    if caller.channel == Role.AUDITOR.value:  # the audit of the auditors: their status reads too
        only = {"pin_type": cmd.only.value} if cmd.only else {}
        read = AuditRead("GetPinStatus", cmd.card_id, json.dumps(only), 1 if state.enrolled else 0)
        if recorded := unrepeated(uow, caller, "", (read,), deps):
            uow.append_terminal(
                caller.terminal_id, recorded, Envelope(caller.channel, caller.terminal_id, "-", deps.now, caller.office)
            )
    if state.enrolled:
        return CardView(state, pin_views(state, deps.policy, deps.now, cmd.only))
    if throttled := count_failure(uow, caller, cmd.card_id, deps):  # a miss: enumeration counts
        uow.append_terminal(
            caller.terminal_id, throttled, Envelope(caller.channel, caller.terminal_id, "-", deps.now, caller.office)
        )
    return None


@dataclass(frozen=True)
class Handler:
    handle: Callable[[UnitOfWork, Any, Caller, Deps], object]  # takes the command type it is listed under
    touches: Callable[[Any, Caller], Touches] = lambda cmd, caller: Touches()


HANDLERS: dict[type, Handler] = {
    **{command: Handler(handle_card_command, card_command_touches) for command in get_args(CardCommand)},
    RecordTerminalEvents: Handler(handle_terminal_events, lambda cmd, caller: Touches(terminals=(caller.terminal_id,))),
    ReadCard: Handler(handle_read_card, lambda cmd, caller: Touches(read_cards=(cmd.card_id,), terminals=(caller.terminal_id,))),
}
