"""The model registry: immutable, content-verified model versions with lineage, and aliases with history."""

from registry.models.names import NAME_PATTERN, InvalidNameError, check_alias, check_model_name, safe_key
from registry.models.records import AliasMoveRecord, FeatureRef, LabelRef, ModelVersionRecord, PromotionDecisionRecord
from registry.models.registry import ModelRegistry, sha256_hex
from registry.models.storage import BlobStore, FsspecBlobStore, LocalBlobStore, open_store
from registry.models.vocabulary import Vocabulary

__all__ = [
    "NAME_PATTERN",
    "AliasMoveRecord",
    "BlobStore",
    "FeatureRef",
    "FsspecBlobStore",
    "InvalidNameError",
    "LabelRef",
    "LocalBlobStore",
    "ModelRegistry",
    "ModelVersionRecord",
    "PromotionDecisionRecord",
    "Vocabulary",
    "check_alias",
    "check_model_name",
    "open_store",
    "safe_key",
    "sha256_hex",
]
