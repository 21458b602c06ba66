"""The Python SDK: `FeatureStore` for point-in-time training data and online reads.

from featurestore.sdk import FeatureStore

fs = FeatureStore.from_settings()                       # or FeatureStore(definitions=..., offline=..., online=...)
train = fs.get_historical_features("is_fraud", "fraud")  # a label's rows, a model's feature set
now = fs.get_online_features(["card_activity:1:txn_count_10m"], [{"card_id": "c1"}]).to_pandas()
"""

from featurestore.sdk.historical import LabelTrainingRows
from featurestore.sdk.online import FeatureStatus, OnlineFeature, OnlineFeatures
from featurestore.sdk.refs import FeatureSelection, ViewSelection, select_features
from featurestore.sdk.store import EVENT_TIMESTAMP, FeatureStore

__all__ = [
    "EVENT_TIMESTAMP",
    "FeatureSelection",
    "FeatureStatus",
    "FeatureStore",
    "LabelTrainingRows",
    "OnlineFeature",
    "OnlineFeatures",
    "ViewSelection",
    "select_features",
]
