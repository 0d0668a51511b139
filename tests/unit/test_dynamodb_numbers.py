"""DynamoDB numbers read back: whole ones as int, others as float, exactly as Decimal decides."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from shipml.backends.aws.online import _from_attribute


def _reference(text: str) -> int | float:
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(number)


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


_NUMBER_TEXT = st.one_of(
    st.integers(min_value=-(10**38), max_value=10**38).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(0, 12)
    .flatmap(lambda places: st.decimals(allow_nan=False, allow_infinity=False, places=places))
    .map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.builds(
        lambda sign, whole, zeros, digits: f"{sign}{whole}.{'0' * zeros}{digits}",
        st.sampled_from(["", "-"]),
        st.integers(0, 10**20),
        st.integers(0, 5),
        st.sampled_from(["", "0", "000", "5", "25", "0001"]),
    ).filter(lambda text: not text.endswith(".")),
)


@given(_NUMBER_TEXT)
def test_numbers_read_back_as_decimal_decides(text):
    assert _same(_from_attribute({"N": text}), _reference(text))


def test_number_forms_dynamodb_sends():
    cases = {"7": 7, "-7": -7, "0": 0, "42.5": 42.5, "-0.25": -0.25, "1.0": 1, "1E+2": 100, "2.5E-1": 0.25}
    for text, expected in cases.items():
        assert _same(_from_attribute({"N": text}), expected), text
    assert _from_attribute({"N": "123456789012345678901234567890"}) == 123456789012345678901234567890
