"""Streams: what the log is made of (DESIGN.md §3). Each card has a stream;
each terminal has one too, for events that are about the terminal rather
than a card (access refusals, throttling). A stream is named by its id:

- a card's stream: the card id (service/domain/card_ids.py: 1-64 of
  A-Z a-z 0-9 . _ -, never ":");
- a terminal's stream: "terminal:" + the terminal id (1-64 of the same).

The widths of the store's columns follow from these rules (STREAM_ID_LENGTH),
not the other way round.
"""

from __future__ import annotations

import enum
import re

from .card_ids import CARD_ID_MAX_LENGTH


class StreamKind(enum.Enum):
    CARD = "card"
    TERMINAL = "terminal"


TERMINAL_ID_MAX_LENGTH = 64
TERMINAL_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{TERMINAL_ID_MAX_LENGTH}}}", re.ASCII)
TERMINAL_STREAM_PREFIX = "terminal:"
STREAM_ID_LENGTH = 80  # the stored column's width: every stream id of the rules above fits
assert STREAM_ID_LENGTH >= max(CARD_ID_MAX_LENGTH, len(TERMINAL_STREAM_PREFIX) + TERMINAL_ID_MAX_LENGTH)


def terminal_stream(terminal_id: str) -> str:
    return TERMINAL_STREAM_PREFIX + terminal_id


def stream_kind(stream_id: str) -> StreamKind:
    return StreamKind.TERMINAL if stream_id.startswith(TERMINAL_STREAM_PREFIX) else StreamKind.CARD


def is_card_stream(stream_id: str) -> bool:
    return not stream_id.startswith(TERMINAL_STREAM_PREFIX)
