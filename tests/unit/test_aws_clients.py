"""shipml.backends.aws.clients: botocore clients for the hot paths, and the secret they read."""

from __future__ import annotations

import pytest

from shipml.backends.aws.clients import make_client, read_secret
from shipml.errors import ShipmlError

REGION = "eu-west-1"


def test_make_client_gives_botocores_client_with_the_options(moto_aws):
    from botocore.config import Config

    client = make_client(None, "secretsmanager", region_name=REGION, config=Config(read_timeout=3))
    assert type(client).__module__ == "botocore.client"
    assert client.meta.region_name == REGION
    assert client.meta.config.read_timeout == 3


def test_read_secret_reads_text_and_binary_secrets(moto_aws):
    client = make_client(None, "secretsmanager", region_name=REGION)
    text = client.create_secret(Name="text-key", SecretString="k" * 32)["ARN"]
    binary = client.create_secret(Name="binary-key", SecretBinary=b"b-key")["ARN"]
    assert read_secret(client, text) == "k" * 32
    assert read_secret(client, "text-key") == "k" * 32  # by name as well as by ARN
    assert read_secret(client, binary) == "b-key"


def test_a_missing_or_unreadable_secret_is_named_never_its_value(moto_aws):
    client = make_client(None, "secretsmanager", region_name=REGION)
    with pytest.raises(ShipmlError, match=r"cannot read the secret no-such-key: ResourceNotFoundException"):
        read_secret(client, "no-such-key")
    raw = client.create_secret(Name="raw-key", SecretBinary=b"\xff\xfe-not-text")["ARN"]
    with pytest.raises(ShipmlError, match="is binary and not UTF-8 text") as caught:
        read_secret(client, raw)
    assert "not-text" not in str(caught.value)
