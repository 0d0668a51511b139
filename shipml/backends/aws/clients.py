"""AWS clients for the Lambda hot paths, made from botocore directly, and the secret they read.

boto3 is a layer over botocore: its Session adds resources and, for S3, the managed-transfer
methods (s3transfer, concurrent.futures, multiprocessing), none of which the serving path uses.
Importing it cost about 20 ms of every cold start (`python -X importtime`). The clients made
here are botocore's own, the very objects boto3 hands out: the same API and configuration,
patched by the X-Ray SDK and mocked by moto alike.

A session here is a `botocore.session.Session` (the default; its `create_client`), a boto3
`Session` (its `client`, for callers that hold one), or a stand-in with either method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipml.errors import ShipmlError

if TYPE_CHECKING:
    from shipml.settings import Settings


def new_session() -> Any:
    """A botocore session reading the usual environment (Lambda sets the region and credentials)."""
    import botocore.session

    return botocore.session.get_session()


def make_client(session: Any, service: str, **kwargs: Any) -> Any:
    """`service`'s client from `session` (a new botocore session when None)."""
    session = session or new_session()
    create = getattr(session, "create_client", None)  # botocore's name; boto3's is `client`
    return create(service, **kwargs) if create is not None else session.client(service, **kwargs)


def read_secret(client: Any, secret_id: str) -> bytes:
    """A Secrets Manager secret's current value, as bytes: a text secret UTF-8 encoded, a binary
    one as stored (an HMAC key may be any bytes). An empty value is refused.

    Read once per process (cold start). A failure names the secret and the reason, never the value.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        reason = ": ".join(part for part in (error.get("Code"), error.get("Message")) if part)
        raise ShipmlError(f"cannot read the secret {secret_id}: {reason or exc}") from None
    except BotoCoreError as exc:
        raise ShipmlError(f"cannot read the secret {secret_id}: {exc}") from None
    text = answer.get("SecretString")
    value = text.encode("utf-8") if isinstance(text, str) else answer.get("SecretBinary")
    if not isinstance(value, bytes) or not value:
        raise ShipmlError(f"the secret {secret_id} has no value")
    return value


def pii_hash_key(settings: Settings, secrets: Any) -> bytes:
    """The key that hashes PII fields: the secret `SHIPML_HASH_KEY_SECRET` names, read with
    `secrets` (a Secrets Manager client), else the settings' own key."""
    if settings.hash_key_secret:
        return read_secret(secrets, settings.hash_key_secret)
    return settings.hash_key.encode()
