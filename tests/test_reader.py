"""Input lines decode exactly as the SDK's own reader decodes them, fast path or not."""

from __future__ import annotations

from decimal import Decimal

import pytest
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.singerlib.json import deserialize_json

from target_omnisend.reader import SingerInput

LINES = [
    '{"type":"RECORD","stream":"s","record":{"email":"a@b.co","ltv":12.50,"n":3}}',
    '{"type":"RECORD","stream":"s","record":{"big":123456789012345678901234567890}}',
    '{"type":"RECORD","stream":"s","record":{"x":1e400,"y":-0.0,"z":1E-7}}',
    '{"type":"RECORD","stream":"s","record":{"nan":NaN,"inf":Infinity}}',  # json only
    '{"type":"RECORD","stream":"s","record":{"lone":"\\udcff"}}',  # json only
    '{"type":"RECORD","stream":"s","record":{"dup":1,"dup":2,"u":"Zoë 😀"}}',
]


@pytest.mark.parametrize("line", LINES)
def test_lines_decode_as_the_sdk_reader_decodes_them(line: str) -> None:
    ours = SingerInput().deserialize_json(line)
    theirs = deserialize_json(line)
    assert repr(ours) == repr(theirs)  # same values and same types (Decimal stays Decimal)


def test_numbers_with_a_fraction_stay_exact() -> None:
    record = SingerInput().deserialize_json(LINES[0])["record"]
    assert record["ltv"] == Decimal("12.50") and str(record["ltv"]) == "12.50"


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"RECORD",',
        "[1, 2]",
        '"text"',
        '{"type":["RECORD"],"stream":"s"}',  # the SDK would crash on an unhashable type
        '{"type":"RECORD","record":' + "[" * 5000 + "]" * 5000 + "}",
    ],
)
def test_a_bad_line_is_named_by_number_without_its_content(line: str) -> None:
    reader = SingerInput()
    reader.line_number = 7
    with pytest.raises(InvalidInputLine) as raised:
        reader.deserialize_json(line)
    assert "line 7" in str(raised.value)
    assert line not in str(raised.value)


def test_integers_too_long_for_python_stay_exact() -> None:
    record = SingerInput().deserialize_json('{"type":"RECORD","n":1' + "0" * 5000 + "}")
    assert record["n"] == Decimal("1" + "0" * 5000)
