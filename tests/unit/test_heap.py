"""service/runtime/heap.py: start-up objects are frozen out of the collector, and
cycles created afterwards are still collected."""

from __future__ import annotations

import gc
import weakref

from pinlife.runtime.heap import freeze_startup_objects


class Node:
    def __init__(self):
        self.other = None


def in_collected_generations(obj) -> bool:
    return any(o is obj for g in range(3) for o in gc.get_objects(generation=g))


def test_startup_objects_are_frozen_and_later_cycles_still_collected():
    before = Node()
    assert in_collected_generations(before)
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert not in_collected_generations(before)  # out of every collection's reach
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle made after the freeze
        ref = weakref.ref(a)
        assert in_collected_generations(a)
        del a, b
        gc.collect()
        assert ref() is None
    finally:
        gc.unfreeze()
