"""Settings renamed in 0.2: the old names keep working for one release, with a warning.

Every process knows every old name (so none is reported as unknown, whichever process reads
it); a process applies only those whose new name is one of its settings. The CHANGELOG lists
each of them under Deprecated, and a test sets each old name and checks where it lands.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RENAMED", "Renamed"]


@dataclass(frozen=True)
class Renamed:
    old: str
    new: str
    # Applied only by the processes of this section (e.g. "WORKER"): the old name was that
    # process's own override of a setting that is now shared.
    only: str | None = None
    # The old port's 0 meant "off"; now 0 picks a free port and this boolean switches it off.
    zero_disables: str | None = None


RENAMED: tuple[Renamed, ...] = (
    # One name for the online store's key prefix.
    Renamed("FTI_ONLINE_STORE_PREFIX", "FTI_REDIS_PREFIX"),
    Renamed("FTI_FEATURES_REDIS_PREFIX", "FTI_REDIS_PREFIX", only="WORKER"),
    # One table of topics.
    Renamed("FTI_FEATURES_TOPIC_PARTITIONS", "FTI_EVENTS_TOPIC_PARTITIONS", only="WORKER"),
    Renamed("FTI_FEATURES_REPLICATION_FACTOR", "FTI_EVENTS_TOPIC_REPLICATION_FACTOR", only="WORKER"),
    Renamed("FTI_STACK_EVENTS_PARTITIONS", "FTI_EVENTS_TOPIC_PARTITIONS", only="STACK"),
    # The feature worker (and backfill, verify): FTI_FEATURES_* -> FTI_WORKER_*.
    Renamed("FTI_FEATURES_APP_ID", "FTI_WORKER_APP_ID"),
    Renamed("FTI_FEATURES_STATE_PREFIX", "FTI_WORKER_STATE_PREFIX"),
    Renamed("FTI_FEATURES_BATCH_SIZE", "FTI_WORKER_BATCH_SIZE"),
    Renamed("FTI_FEATURES_COMMIT_INTERVAL_S", "FTI_WORKER_COMMIT_INTERVAL_S"),
    Renamed("FTI_FEATURES_SESSION_TIMEOUT_S", "FTI_WORKER_SESSION_TIMEOUT_S"),
    Renamed("FTI_FEATURES_HEARTBEAT_INTERVAL_S", "FTI_WORKER_HEARTBEAT_INTERVAL_S"),
    Renamed("FTI_FEATURES_WEB_PORT", "FTI_WORKER_WEB_PORT", zero_disables="FTI_WORKER_WEB_ENABLED"),
    Renamed("FTI_FEATURES_METRICS_PORT", "FTI_WORKER_METRICS_PORT", zero_disables="FTI_WORKER_METRICS_ENABLED"),
    Renamed("FTI_FEATURES_STATE_SLACK_MS", "FTI_WORKER_STATE_SLACK_MS"),
    Renamed("FTI_FEATURES_DEDUP_RETENTION_MS", "FTI_WORKER_DEDUP_RETENTION_MS"),
    Renamed("FTI_FEATURES_LOG_LEVEL", "FTI_WORKER_LOG_LEVEL"),
    Renamed("FTI_FEATURES_EVENT_LOOP", "FTI_WORKER_EVENT_LOOP"),
    # The inference server: generic names -> FTI_SERVE_*; `fti predict`'s target -> FTI_PREDICT_TARGET.
    Renamed("FTI_MODEL", "FTI_SERVE_MODEL"),
    Renamed("FTI_ALIAS", "FTI_SERVE_ALIAS"),
    Renamed("FTI_SWAP_ON_PUBLISH", "FTI_SERVE_SWAP_ON_PUBLISH"),
    Renamed("FTI_HOST", "FTI_SERVE_HOST"),
    Renamed("FTI_PORT", "FTI_SERVE_PORT"),
    Renamed("FTI_METRICS_PORT", "FTI_SERVE_METRICS_PORT"),
    Renamed("FTI_METRICS_ENABLED", "FTI_SERVE_METRICS_ENABLED"),
    Renamed("FTI_REDIS_TIMEOUT_MS", "FTI_SERVE_REDIS_TIMEOUT_MS"),
    Renamed("FTI_REDIS_FAILURE_MODE", "FTI_SERVE_REDIS_FAILURE_MODE"),
    Renamed("FTI_REDIS_COALESCE", "FTI_SERVE_REDIS_COALESCE"),
    Renamed("FTI_EVENT_LOOP", "FTI_SERVE_EVENT_LOOP"),
    Renamed("FTI_MAX_BATCH_SIZE", "FTI_SERVE_MAX_BATCH_SIZE"),
    Renamed("FTI_MAX_MESSAGE_BYTES", "FTI_SERVE_MAX_MESSAGE_BYTES"),
    Renamed("FTI_MAX_CONCURRENT_RPCS", "FTI_SERVE_MAX_CONCURRENT_RPCS"),
    Renamed("FTI_SHUTDOWN_GRACE_S", "FTI_SERVE_SHUTDOWN_GRACE_S"),
    Renamed("FTI_RESOLVE_INTERVAL_S", "FTI_SERVE_RESOLVE_INTERVAL_S"),
    Renamed("FTI_EVENT_GROUP_ID", "FTI_SERVE_EVENT_GROUP_ID"),
    Renamed("FTI_TLS_CERT_FILE", "FTI_SERVE_TLS_CERT_FILE"),
    Renamed("FTI_TLS_KEY_FILE", "FTI_SERVE_TLS_KEY_FILE"),
    Renamed("FTI_TLS_CLIENT_CA_FILE", "FTI_SERVE_TLS_CLIENT_CA_FILE"),
    Renamed("FTI_TARGET", "FTI_PREDICT_TARGET"),
    # The trainer.
    Renamed("FTI_CODE_VERSION", "FTI_TRAIN_CODE_VERSION"),
)
