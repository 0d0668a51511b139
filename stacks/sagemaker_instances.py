"""Facts about SageMaker instance types that more than one construct needs."""

from __future__ import annotations

import re

# Instance families with local NVMe storage: SageMaker refuses a VolumeKmsKeyId for them (their
# instance-store volumes are encrypted by the hardware), so the key is set only for the others.
_LOCAL_STORAGE_FAMILY = re.compile(
    r"^ml\.([a-z]+\d+[a-z]*d[a-z]*|g5|g6|g6e|gr6|p5|p5e|p5en|trn1|trn1n|trn2)\."
)


def has_local_storage(instance_type: str) -> bool:
    """Whether an ML instance type has NVMe instance storage (and so takes no VolumeKmsKeyId)."""
    return bool(_LOCAL_STORAGE_FAMILY.match(instance_type))
