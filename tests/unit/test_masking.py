"""PII masking: each policy, and canary values that must not survive."""

from __future__ import annotations

import hashlib
import hmac
import json
from concurrent.futures import ThreadPoolExecutor

from shipml.contract import Masker, parse_contract
from shipml.contract.masking import mask_value

CANARY_CARD = "4000123412341234"
CANARY_CUSTOMER = "C99999999"


def test_each_policy_applies(contract):
    masker = Masker(contract, hash_key=b"k")
    record = {"card_number": CANARY_CARD, "customer_id": CANARY_CUSTOMER, "amount": 10.0}
    masked = masker.mask(record)
    assert masked["card_number"] == "************1234"
    assert masked["customer_id"].startswith("h:") and len(masked["customer_id"]) == 26
    assert masked["amount"] == 10.0
    assert record["card_number"] == CANARY_CARD  # the input is not modified
    serialised = json.dumps(masked)
    assert CANARY_CARD not in serialised and CANARY_CUSTOMER not in serialised


def test_hash_is_keyed_and_stable(contract):
    a, b = Masker(contract, hash_key=b"one"), Masker(contract, hash_key=b"two")
    assert a.hash_value(CANARY_CUSTOMER) == a.hash_value(CANARY_CUSTOMER)
    assert a.hash_value(CANARY_CUSTOMER) != b.hash_value(CANARY_CUSTOMER)


def test_hash_is_hmac_sha256_of_the_text(contract):
    # The keyed HMAC is reused (copied) across values: each value must still hash on its own,
    # from any thread, to the first 24 hex digits of HMAC-SHA256(key, text).
    masker = Masker(contract, hash_key=b"deployment-secret")
    values = [CANARY_CUSTOMER, "C00000001", "", 12345, "é-ü"] * 40

    def expected(value: object) -> str:
        return "h:" + hmac.new(b"deployment-secret", str(value).encode(), hashlib.sha256).hexdigest()[:24]

    assert [masker.hash_value(v) for v in values] == [expected(v) for v in values]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(masker.hash_value, values)) == [expected(v) for v in values]


def test_drop_removes_the_field_and_keep_keeps_it(contract):
    raw = contract.model_dump(mode="json")
    for f in raw["features"]:
        if f["name"] == "card_number":
            f["pii_policy"] = "drop"
        if f["name"] == "customer_id":
            f["pii_policy"] = "keep"
    masker = Masker(parse_contract(raw))
    assert masker.mask({"card_number": CANARY_CARD, "customer_id": CANARY_CUSTOMER}) == {
        "customer_id": CANARY_CUSTOMER
    }


def test_short_values_are_fully_masked():
    assert mask_value("12345678") == "********"
