"""Template values check themselves when built (RFC 3954 §5.2, RFC 7011 §3.4)."""

from __future__ import annotations

import pytest

from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template


def test_a_fixed_template_knows_its_record_length() -> None:
    t = Template(
        template_id=256, fields=(FieldSpec(element=8, length=4), FieldSpec(element=7, length=2))
    )
    assert t.record_length == 6
    assert t.minimum_length == 6


def test_a_variable_length_field_has_no_record_length_and_a_minimum_of_one_byte() -> None:
    t = Template(
        template_id=300,
        fields=(FieldSpec(element=82, length=VARIABLE_LENGTH), FieldSpec(element=1, length=8)),
    )
    assert t.record_length is None
    assert t.minimum_length == 9
    assert t.fields[0].variable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"template_id": 255, "fields": (FieldSpec(element=1, length=4),)}, "between 256"),
        ({"template_id": 256, "fields": ()}, "no fields"),
        ({"template_id": 256, "fields": (FieldSpec(element=1, length=4),), "scope_fields": 1},
         "scope"),
        ({"template_id": 256, "fields": (FieldSpec(element=1, length=4),), "options": True,
          "scope_fields": 2}, "scope"),
    ],
)  # fmt: skip
def test_an_impossible_template_is_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Template(**kwargs)  # type: ignore[arg-type]


def test_field_numbers_are_checked() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        FieldSpec(element=70000, length=4)
    with pytest.raises(ValueError, match="32-bit"):
        FieldSpec(element=1, length=4, enterprise=1 << 32)
