"""Domain errors. Hosts map them to responses in one place (HTTP status, CLI exit code)."""


class ShipmlError(Exception):
    """Base of every error shipml raises on purpose; its message is meant for the user."""


class ContractError(ShipmlError):
    """A contract file is missing, malformed or inconsistent."""


class DataError(ShipmlError):
    """A data file does not match the contract (missing column, wrong type) or cannot be read."""


class ArtifactError(ShipmlError):
    """A model artifact is incomplete, corrupt or tampered with."""


class RegistryError(ShipmlError):
    """A registry operation cannot be done (unknown model or version, not approved...)."""


class UnknownModelVersion(RegistryError):
    """The named model or version does not exist."""


class OnlineFeatureError(ShipmlError):
    """Online features could not be fetched and the contract says to refuse rather than default."""


class ModelOutputError(ShipmlError):
    """The model answered something that is not a score (NaN or infinite): no decision is made from it."""


class FeatureSourceUnavailable(ShipmlError):
    """An online store or external feature source timed out, throttled, failed or answered garbage.

    Adapters raise it (never a botocore or HTTP exception); the predictor then applies each
    feature's `on_missing` policy: a flagged default, or a 503 naming the feature.
    """


class OnlineStoreWriteError(ShipmlError):
    """Some items could not be written to the online store, even after retries.

    `written` items did land; `failed_keys` names the entity keys that did not (each item is
    written whole or not at all, so the table stays consistent and a rerun can repair it)."""

    def __init__(self, message: str, *, written: int, failed_keys: list[str]) -> None:
        super().__init__(message)
        self.written = written
        self.failed_keys = failed_keys
