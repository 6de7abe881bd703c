"""Handle one command inside a unit of work: replay an earlier answer to the
same request id, or load state, decide, append, store new verifiers and
remember the answer, all in the caller's transaction. A status read is
answered from the same unit of work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.app.answers import Answer, command_name, decode, encode, fingerprint
from service.domain.access import Role
from service.domain.commands import Command
from service.domain.decide import decide
from service.domain.errors import FieldViolation, InvalidInput
from service.domain.events import Event
from service.domain.pins import PinType
from service.domain.state import CardState
from service.keys import KeyRing
from service.store.event_store import Envelope, StoredRequest, UnitOfWork


@dataclass(frozen=True)
class Caller:
    """The authenticated terminal behind a request: its channel is its role."""

    channel: str
    terminal_id: str
    office: str | None = None

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
    """A status read (GetPinStatus), answered inside a writer batch: costs
    no try and records nothing."""

    card_id: str


class MissingVerifier(Exception):
    """A PIN type is enrolled but has no verifier: the store is damaged."""


def execute(
    uow: UnitOfWork, cmd: Command | RecordTerminalEvents | ReadCard, caller: Caller, keys: KeyRing, now: datetime
) -> Answer | int | CardState | None:
    if isinstance(cmd, ReadCard):
        state = uow.card(cmd.card_id)
        return state if state.enrolled else None
    if isinstance(cmd, RecordTerminalEvents):
        env = Envelope(caller.channel, caller.terminal_id, cmd.request_id, now)
        return uow.append_terminal(caller.terminal_id, cmd.events, env)
    fp = fingerprint(cmd)
    prior = uow.request(caller.terminal_id, cmd.request_id)
    if prior is not None:
        if prior.fingerprint != fp:
            raise InvalidInput(FieldViolation("request_id", "was already used by this terminal for a different request"))
        return Answer(decode(prior.outcome), prior.stream_version, replayed=True)

    state = uow.card(cmd.card_id)
    rekey: dict[PinType, str] = {}

    def matches(pin_type: PinType, pin: str) -> bool:
        stored = uow.verifier(cmd.card_id, pin_type)
        if stored is None:
            raise MissingVerifier(f"{cmd.card_id}/{pin_type.value}")
        ok = keys.matches(stored, cmd.card_id, pin_type, pin)
        if ok and stored.key_id != keys.current:
            rekey[pin_type] = pin  # re-key a verifier under a retired key on success
        return ok

    decision = decide(state, cmd, matches)
    new_state = uow.append(cmd.card_id, decision.events, Envelope(caller.channel, caller.terminal_id, cmd.request_id, now))
    for pin_type, pin in {**rekey, **decision.new_pins}.items():
        uow.set_verifier(cmd.card_id, pin_type, keys.make(cmd.card_id, pin_type, pin))
    answer = StoredRequest(
        caller.terminal_id, cmd.request_id, cmd.card_id, command_name(cmd), fp, encode(decision.outcome), new_state.version
    )
    uow.remember(answer, now)
    return Answer(decision.outcome, new_state.version)
