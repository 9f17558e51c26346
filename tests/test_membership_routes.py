"""The two membership routes as pure values: what each writes into a contact body, the
segment rule each makes and recognises, and the key each is remembered by."""

from __future__ import annotations

import pytest

from target_omnisend.api import is_property_rule, is_tag_rule
from target_omnisend.membership import (
    Membership,
    PropertyMembership,
    TagMembership,
    property_name_problem,
    route_for_key,
)


@pytest.mark.parametrize("route", [TagMembership("segment:vip"), PropertyMembership("in_vip")])
def test_a_route_is_found_again_from_its_key_and_recognises_its_own_rule(
    route: Membership,
) -> None:
    again = route_for_key(route.key)
    assert again == route
    rule = route.segment_body("VIP")["conditionGroups"]
    assert again.followed_by(rule)
    other = TagMembership("x") if isinstance(route, PropertyMembership) else PropertyMembership("x")
    assert not other.followed_by(rule)


def test_the_property_route_marks_the_body_and_keeps_the_other_properties() -> None:
    shared = {"loyalty_tier": "gold"}
    body = {"identifiers": [], "customProperties": shared}
    PropertyMembership("in_vip").mark(body)
    assert body["customProperties"] == {"loyalty_tier": "gold", "in_vip": True}
    assert shared == {"loyalty_tier": "gold"}  # a dict another body may share is not changed
    bare: dict = {"identifiers": []}
    TagMembership("segment:vip").mark(bare)
    assert bare == {"identifiers": []}  # a tag never goes in the body


def test_a_property_rule_is_recognised_by_meaning_not_by_text() -> None:
    flt = {"operator": "equals", "property": "custom", "name": "in_vip", "value": True}
    echoed = [{"conditions": [{"filters": [flt]}]}]  # no junction, no valueType, no entity
    assert is_property_rule(echoed, "in_vip")
    for change in ({"value": 1}, {"value": "true"}, {"name": "in_vi"}, {"valueType": "text"}):
        assert not is_property_rule([{"conditions": [{"filters": [{**flt, **change}]}]}], "in_vip")
    assert not is_tag_rule(echoed, "in_vip")
    assert not is_property_rule([*echoed, *echoed], "in_vip")  # two groups: another rule


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("in_vip", False),
        ("In-VIP_2", False),
        ("x" * 64, False),
        ("x" * 65, True),
        ("", True),
        ("_vip", True),
        ("in vip", True),
        ("in.vip", True),
        ("in_vïp", True),
        ("Email", True),
        ("tags", True),
    ],
)
def test_property_names_omnisend_might_refuse(name: str, refused: bool) -> None:
    assert (property_name_problem(name) is not None) is refused
