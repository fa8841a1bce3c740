"""A route's body schema: jsonschema-rs says whether a body is valid, the jsonschema validator words why not."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from s2s_daemon.schemas import BodySchema

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name"],
    "additionalProperties": False,
}


def test_a_valid_body_has_no_violation() -> None:
    assert BodySchema(SCHEMA).violation({"name": "x", "tags": ["a"]}) is None


def test_the_first_error_by_path_in_the_words_of_the_jsonschema_validator() -> None:
    schema = BodySchema(SCHEMA)
    assert schema.violation({}) == "(body): 'name' is a required property"
    assert schema.violation({"name": "x", "tags": ["a", 3]}) == "tags/1: 3 is not of type 'string'"
    body = {"name": ""}
    expected = next(iter(Draft202012Validator(SCHEMA).iter_errors(body))).message
    assert schema.violation(body) == f"name: {expected}"


def test_both_validators_agree_on_valid_and_invalid_bodies() -> None:
    schema, full = BodySchema(SCHEMA), Draft202012Validator(SCHEMA)
    bodies = [{}, {"name": "a"}, {"name": 1}, {"name": "a", "x": 1}, [], "s", {"name": "a", "tags": []}]
    for body in bodies:
        assert (schema.violation(body) is None) == full.is_valid(body), body


def test_a_valid_body_is_answered_by_jsonschema_rs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: a valid body never reaches the Python validator (it words errors only)."""
    schema = BodySchema(SCHEMA)

    class NotOnTheHotPath:
        def iter_errors(self, instance: object) -> None:
            raise AssertionError("the Python validator ran for a valid body")

    monkeypatch.setattr(schema, "_full", NotOnTheHotPath())
    assert schema.violation({"name": "x"}) is None
    with pytest.raises(AssertionError, match="Python validator"):
        schema.violation({})
