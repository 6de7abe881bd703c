"""Errors a command can end in. Domain outcomes (wrong PIN, locked,
suspended) are answers, not errors: see outcomes.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any


class DomainError(Exception):
    """Base of the errors a caller can cause. Messages never carry a PIN."""

    # A refusal kept for its request id and replayed to a retry (service/app/answers.py):
    # the same code, message and details as the first time, marked x-pinlife-replayed.
    replayed: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as message and attributes, whatever the subclass's
        # __init__ takes: errors come back from the writer process.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[DomainError], args: tuple[Any, ...], state: dict[str, Any]) -> DomainError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


MAX_FIELD_VIOLATIONS = 20  # reported in one error; the rest are counted (the answer's size is bounded)


class InvalidInput(DomainError):
    """Bad input, refused before anything is checked: costs no try. At most
    MAX_FIELD_VIOLATIONS are kept, then one line says how many more there were."""

    def __init__(self, violations: list[FieldViolation] | FieldViolation):
        if isinstance(violations, FieldViolation):
            violations = [violations]
        violations = list(violations)
        if len(violations) > MAX_FIELD_VIOLATIONS:
            more = len(violations) - MAX_FIELD_VIOLATIONS
            violations = violations[:MAX_FIELD_VIOLATIONS] + [FieldViolation("request", f"and {more} more")]
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))


class OutOfRange(InvalidInput):
    """Input of the right form past what exists (a tree size past the latest
    checkpoint, a position past the tree): OUT_OF_RANGE, its fields named as
    bad input's are."""


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


@dataclass(frozen=True)
class PreconditionViolation:
    type: str
    subject: str
    description: str


class PreconditionFailed(DomainError):
    def __init__(self, violations: list[PreconditionViolation] | PreconditionViolation):
        if isinstance(violations, PreconditionViolation):
            violations = [violations]
        self.violations = list(violations)
        super().__init__("; ".join(f"{v.subject}: {v.description}" for v in self.violations))


class AtCapacity(DomainError):
    """A bounded resource of this instance is in full use (integrity runs,
    watchers): refused at once, to be retried after `retry_after`."""

    def __init__(self, message: str, retry_after: timedelta):
        self.retry_after = retry_after
        super().__init__(message)


class LimitReached(DomainError):
    """A bound of the rules is reached (a card's wrong proxy codes today, a
    terminal's suspensions per window): refused, and recorded, until
    `retry_after` from now. `subject` names what is bounded."""

    def __init__(self, subject: str, message: str, retry_after: timedelta):
        self.subject = subject
        self.retry_after = retry_after
        super().__init__(message)
