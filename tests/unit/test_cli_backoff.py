"""The waits of `pinlife audit watch` between reconnect attempts
(service/cli/audit.py, Backoff): doubling from 0.5 s up to 30 s, each a
uniform draw below that ceiling (full jitter), from 0.5 s again after a
reset. The draw is given: no randomness, no clock."""

from __future__ import annotations

from pinlife.cli.audit import WATCH_BACKOFF, Backoff


def test_the_ceiling_doubles_from_half_a_second_up_to_thirty():
    b = Backoff(rand=lambda: 1.0, **WATCH_BACKOFF)
    assert [b.next() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert b.attempt == 9


def test_each_wait_is_a_uniform_draw_below_the_ceiling_and_a_reset_starts_again():
    draws = iter([0.0, 0.25, 0.5, 0.75, 0.1])
    b = Backoff(rand=lambda: next(draws), **WATCH_BACKOFF)
    assert [b.next() for _ in range(4)] == [0.0, 0.25, 1.0, 3.0]
    b.reset()
    assert (b.next(), b.attempt) == (0.05, 1)


def test_real_draws_stay_within_the_ceiling():
    b = Backoff(**WATCH_BACKOFF)
    for n in range(20):
        assert 0 <= b.next() < min(30.0, 0.5 * 2**n)
