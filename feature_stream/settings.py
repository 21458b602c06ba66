"""Settings of the feature pipeline: `fti features worker`, backfill, verify (section FTI_WORKER_…).

Shared settings (Kafka, Redis and its key prefix, stores, the topics table) are `FTI_<NAME>`;
the worker's own are `FTI_WORKER_<NAME>`, or the `[worker]` table of the config file.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fti_core.settings import FtiSettings

__all__ = ["DEFAULT_FETCH_MAX_WAIT_MS", "DEFAULT_FETCH_MIN_BYTES", "FeatureStreamSettings"]

# aiokafka's fetch wait for the worker (Faust fixes 1,500 ms): see `feature_stream.batch_consumer`.
DEFAULT_FETCH_MAX_WAIT_MS = 20
# About 100 of the demo's transactions; why a fetch waits for more than one record:
# feature_stream/batch_consumer.py.
DEFAULT_FETCH_MIN_BYTES = 16_384


class FeatureStreamSettings(FtiSettings):
    """Everything `fti features ...` reads; built once in the command and passed down."""

    env_section: ClassVar[str] = "WORKER"

    app_id: str = Field("fti-features", description="Faust app id: consumer group and internal topic prefix.")
    state_prefix: str = Field("", description="Worker state key prefix; default '<redis prefix>:state:<app id>'.")
    batch_size: int = Field(
        10_000,
        ge=1,
        description=(
            "Most events per processing batch (a catch-up's; live batches are what arrived): an entity's"
            " events in one batch share its tile writes, and a batch holds the event loop while it runs."
        ),
    )
    fetch_max_wait_ms: int = Field(
        DEFAULT_FETCH_MAX_WAIT_MS,
        ge=1,
        le=10_000,
        description=(
            "Longest a fetch waits on the broker for new records; records arriving meanwhile on"
            " partitions left out of that fetch wait as long (freshness)."
        ),
    )
    fetch_min_bytes: int = Field(
        DEFAULT_FETCH_MIN_BYTES,
        ge=1,
        le=64 * 1024 * 1024,
        description=(
            "Bytes of records a fetch waits for on the broker (at most fetch_max_wait_ms); 1 answers at"
            " the first record, which costs a fetch and a batch per handful of records at low rates."
        ),
    )
    commit_interval_s: float = Field(1.0, gt=0, description="How often Faust commits consumed offsets.")
    gc_full_interval_s: float = Field(
        0.0,
        ge=0,
        description=(
            "How often the cyclic garbage collector scans everything the worker holds (0: never). It stops the"
            " worker ~4 us per retained event (1.7 s at 400k); the worker makes no reference cycles, so set it"
            " only if memory grows with nothing held to explain it. Each one is logged."
        ),
    )
    flush_interval_s: float = Field(
        0.5,
        gt=0,
        description=(
            "Longest time the archive, state and acks of processed events stay buffered (online values are"
            " written at once); offsets are committed up to this much later, and a restart replays as much."
        ),
    )
    session_timeout_s: float = Field(10.0, gt=0, description="Consumer group session timeout.")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Consumer group heartbeat interval.")
    web_enabled: bool = Field(False, description="Serve Faust's web views.")
    web_port: int = Field(6066, ge=0, le=65535, description="Faust web port; 0 picks a free one (logged).")
    metrics_enabled: bool = Field(True, description="Serve /metrics, /livez and /readyz over HTTP.")
    metrics_host: str = Field("0.0.0.0", description="Address of the metrics and health endpoint.")  # noqa: S104
    metrics_port: int = Field(9108, ge=0, le=65535, description="Metrics and health port; 0 picks a free one (logged).")
    redis_timeout_s: float = Field(
        30.0, gt=0, description="Cap on one Redis command or connect; past it Redis counts as unavailable."
    )
    outage_limit_s: float = Field(
        300.0,
        ge=0,
        description="How long the worker waits for Redis, Kafka or the offline store before it exits non-zero.",
    )
    stop_grace_s: float = Field(30.0, gt=0, description="How long a stopping worker gets before it is killed.")
    live_after_s: float = Field(
        60.0, gt=0, description="/livez fails when the worker's event loop has not run for this long."
    )
    stall_after_s: float = Field(
        60.0, gt=0, description="Work waiting and no progress for this long: stalled (/readyz fails)."
    )
    state_slack_ms: int = Field(
        3_600_000, ge=0, description="Ignored since read-time windows (state follows the read horizon); drop it."
    )
    future_skew_ms: int = Field(
        300_000, ge=0, description="Events stamped further ahead of their record's timestamp are dead-lettered."
    )
    dedup_retention_ms: int = Field(
        86_400_000,
        ge=0,
        description="How long event ids are remembered per key. Each event's dedup claim is a Redis key kept "
        "this long, ~210 bytes: size Redis for the rate times the retention (1,000 events/s for a day: "
        "~18 GB), or shorten it for a busy topic.",
    )
    max_cached_entities: int = Field(
        100_000,
        ge=1,
        description=(
            "Most view entities, and most message keys, whose state the worker keeps in memory after a flush"
            " (least recently used evicted, reloaded from Redis when they come back)."
        ),
    )
    max_cached_events: int | None = Field(
        None,
        ge=1,
        description=(
            "Most events the cached view entities retain, and most event ids the cached message keys remember,"
            " after a flush (least recently used evicted as above): what bounds the worker's memory when entities"
            " are busy and windows long. Unset: half the memory available to the worker (its cgroup limit, else"
            " the machine's) at ~1.2 KB an event, logged at start (INFO)."
        ),
    )
    log_level: str = Field("WARNING", description="Faust worker log level.")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="Event loop of the worker; auto uses uvloop when installed."
    )

    @property
    def repartition_topic(self) -> str:
        return f"{self.app_id}-{self.events_topic}-rekeyed"

    @property
    def state_key_prefix(self) -> str:
        return self.state_prefix or f"{self.redis_prefix}:state:{self.app_id}"
