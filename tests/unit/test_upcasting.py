"""Old stored shapes are read as the current event classes (upcasting.py)."""

from __future__ import annotations

import pytest

from service.domain.events import EVENT_TYPES, CardEnrolled, PinVerified
from service.domain.pins import PinType
from service.domain.upcasting import UPCASTERS, UnknownEventShape, event_from_stored, upcast

USER, SIGNATURE = PinType.USER_CERTIFICATE, PinType.SIGNATURE


def test_a_version_1_card_enrolled_reads_as_the_current_class_without_a_ward():
    event = event_from_stored("CardEnrolled", 1, None, {"pin_types": ["user_certificate", "signature"]})
    assert event == CardEnrolled((USER, SIGNATURE), ward=None)


def test_a_current_payload_is_read_as_it_is():
    payload = {"pin_types": ["user_certificate"], "ward": "naka"}
    assert event_from_stored("CardEnrolled", 2, None, payload) == CardEnrolled((USER,), "naka")
    assert upcast("PinVerified", 1, {}) == {}
    assert event_from_stored("PinVerified", 1, "user_certificate", {}) == PinVerified(USER)


def test_every_old_version_of_every_event_type_has_an_upcaster():
    for name, cls in EVENT_TYPES.items():
        for version in range(1, cls.schema_version):
            assert (name, version) in UPCASTERS, f"{name} v{version} cannot be read"


@pytest.mark.parametrize(
    "type_name, version, message",
    [("CardEnrolled", 3, "newer than this release"), ("CardCloned", 1, "unknown event type")],
)
def test_a_shape_this_release_cannot_read_is_refused_by_name(type_name, version, message):
    with pytest.raises(UnknownEventShape, match=message):
        upcast(type_name, version, {"pin_types": []})
