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


def test_make_client_takes_a_boto3_session_too(moto_aws):
    import boto3

    client = make_client(boto3.session.Session(region_name=REGION), "secretsmanager")
    assert client.meta.region_name == REGION and client.meta.service_model.service_name == "secretsmanager"


def test_read_secret_reads_text_and_binary_secrets_as_bytes(moto_aws):
    client = make_client(None, "secretsmanager", region_name=REGION)
    text = client.create_secret(Name="text-key", SecretString="k" * 31 + "é")["ARN"]
    binary = client.create_secret(Name="binary-key", SecretBinary=b"\xff\xfe-any-bytes")["ARN"]
    assert read_secret(client, text) == ("k" * 31 + "é").encode()
    assert read_secret(client, "text-key") == ("k" * 31 + "é").encode()  # by name as well as by ARN
    assert read_secret(client, binary) == b"\xff\xfe-any-bytes"  # an HMAC key may be any bytes


def test_a_missing_or_empty_secret_is_named_never_its_value(moto_aws):
    client = make_client(None, "secretsmanager", region_name=REGION)
    with pytest.raises(ShipmlError, match=r"cannot read the secret no-such-key: ResourceNotFoundException"):
        read_secret(client, "no-such-key")

    class Empty:
        def get_secret_value(self, SecretId):  # noqa: N803 - botocore's names
            return {"ARN": SecretId, "SecretString": ""}

    with pytest.raises(ShipmlError, match="the secret empty-key has no value"):
        read_secret(Empty(), "empty-key")


def test_the_stream_consumer_reads_its_hash_key_from_the_secret(moto_aws, tmp_path):
    from shipml.contract import load_contract
    from shipml.stream.factory import _aws_parts
    from tests.builders import aws_settings
    from tests.conftest import CONTRACT_PATH

    secrets = moto_aws.client("secretsmanager")
    arn = secrets.create_secret(Name="pii-key", SecretString="s" * 32)["ARN"]
    settings = aws_settings(CONTRACT_PATH, hash_key_secret=arn)
    *_, hash_key = _aws_parts(settings, load_contract(CONTRACT_PATH), moto_aws, tmp_path)
    assert hash_key == b"s" * 32
    *_, default_key = _aws_parts(
        settings.model_copy(update={"hash_key_secret": None}),
        load_contract(CONTRACT_PATH),
        moto_aws,
        tmp_path,
    )
    assert default_key == settings.hash_key.encode()
