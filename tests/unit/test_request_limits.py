"""Bodies refused before parsing: over the size limit (413), nested too deep (400), both naming the body."""

from __future__ import annotations

import base64
import json

import pytest

from inferops.request_limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, BodyRefused, check_body, json_depth


def test_json_depth_counts_arrays_and_objects_and_skips_strings() -> None:
    assert json_depth('{"a": [1, {"b": []}]}') == 4
    assert json_depth('{"a": "[[[[{{{{\\"]]]"}') == 1
    assert json_depth("") == 0
    assert json_depth("[" * 100_000) == 100_000  # no recursion: a scan


def test_a_body_at_the_limits_passes() -> None:
    check_body(json.dumps({"x": "y" * (MAX_BODY_BYTES - 20)}))
    check_body("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    check_body(None)


def test_oversized_bodies_get_413_naming_the_limit() -> None:
    with pytest.raises(BodyRefused) as refused:
        check_body("x" * (MAX_BODY_BYTES + 1))
    assert refused.value.status == 413
    assert refused.value.message == f"body: {MAX_BODY_BYTES + 1} bytes is over the limit of {MAX_BODY_BYTES} bytes"
    encoded = base64.b64encode(b"\0" * (MAX_BODY_BYTES + 1)).decode()
    with pytest.raises(BodyRefused, match="over the limit"):
        check_body(encoded, is_base64=True)


def test_deep_json_gets_400_before_any_parse() -> None:
    with pytest.raises(BodyRefused) as refused:
        check_body("[" * 10_000 + "]" * 10_000)
    assert refused.value.status == 400
    assert "nested 10000 levels deep" in refused.value.message and refused.value.message.startswith("body:")
    with pytest.raises(BodyRefused, match="not valid base64"):
        check_body("@@@", is_base64=True)
