"""One online-feature lookup per batch, shared by the consumer's checks and the predictor.

The consumer must know, per record, whether an online feature that the contract will not default
is missing (that record is dead-lettered as `unknown_entity`, the others are scored), but
`Predictor.enrich` refuses the whole batch on the first such record. So the consumer fetches the
batch's entities once through this store, decides per record, and the predictor, built on this
store, is answered from the same fetch: one BatchGetItem per batch, not two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shipml.backends.ports import OnlineStore
from shipml.errors import FeatureSourceUnavailable


class PrefetchedOnlineStore(OnlineStore):
    """Wraps an `OnlineStore`; `prefetch` looks up a batch once, later `get_many` calls for a subset
    of those keys are answered from it (including the failure, re-raised). Not shared across threads:
    a Lambda execution environment and the CLI score one batch at a time."""

    def __init__(self, store: OnlineStore) -> None:
        self.store = store
        self._group: str | None = None
        self._keys: frozenset[str] = frozenset()
        self._found: dict[str, dict[str, Any]] = {}
        self._failure: FeatureSourceUnavailable | None = None

    def prefetch(self, group: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Look the keys up once; raise `FeatureSourceUnavailable` as the store does."""
        self._group, self._keys, self._found, self._failure = group, frozenset(keys), {}, None
        try:
            self._found = self.store.get_many(group, list(dict.fromkeys(keys)))
        except FeatureSourceUnavailable as exc:
            self._failure = exc
            raise
        return self._found

    def clear(self) -> None:
        """Forget the batch (called when the batch is done)."""
        self._group, self._keys, self._found, self._failure = None, frozenset(), {}, None

    def get_many(self, group: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if group == self._group and self._keys.issuperset(keys):
            if self._failure is not None:
                raise self._failure
            return {key: self._found[key] for key in keys if key in self._found}
        return self.store.get_many(group, keys)

    def put_many(self, group: str, items: Mapping[str, Mapping[str, Any]]) -> int:
        return self.store.put_many(group, items)
