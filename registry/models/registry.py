"""The model registry: immutable versions with lineage, moving aliases with a history.

Layout under the root (every part a checked name):

    models/<model>/artefacts/<sha256>.txt            the model (its flavor's format), content-addressed
    models/<model>/artefacts/<sha256>.parquet        held-out rows it was validated on
    models/<model>/versions/<0000000001>.json        the version record: the commit point
    models/<model>/aliases/<alias>/<0000000001>.json one file per alias move, in order
    models/<model>/decisions/<alias>/<version>.json  a promoter's verdict on a candidate

A publish writes the artefacts first and commits by creating the next version record with
a create-exclusive write; losing that race means another publisher took the number, so it
re-reads and tries the next one. Alias moves are committed the same way on the next
sequence number. Nothing becomes visible before its commit, so a publisher killed midway
leaves only an unreferenced artefact behind, never a version.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from fti.v1 import models_pb2
from fti_core.errors import ConflictError, IntegrityError, InvalidArgumentError, NotFoundError, UnavailableError
from fti_core.tasks import Task
from registry.events import ModelEventSink, new_event
from registry.flavors import LIGHTGBM, Predictor, get_flavor, load_predictor
from registry.models.aliases import current_holder, holder_at, rollback_target
from registry.models.names import check_alias, check_model_name, safe_key
from registry.models.records import (
    ALIAS_MOVE_KINDS,
    AliasMoveRecord,
    FeatureRef,
    LabelRef,
    ModelVersionRecord,
    PromotionDecisionRecord,
)
from registry.models.storage import BlobStore, open_store
from registry.models.verify import verify_loadable
from registry.models.vocabulary import Vocabulary

__all__ = ["ModelRegistry", "sha256_hex"]

_T = TypeVar("_T")
_MAX_RACE_RETRIES = 1000


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _seq_name(n: int) -> str:
    return f"{n:010d}.json"


def _seq_numbers(names: Sequence[str]) -> list[int]:
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _checked_entities(features: Sequence[FeatureRef], entities: Sequence[str] | None) -> tuple[str, ...]:
    """The distinct entity kinds of `features`; each feature must name one, one per view version."""
    by_view: dict[tuple[str, int], str] = {}
    for f in features:
        if not f.entity:
            raise InvalidArgumentError(f"feature {f.view}:{f.view_version}.{f.feature} names no entity")
        seen = by_view.setdefault((f.view, f.view_version), f.entity)
        if seen != f.entity:
            raise InvalidArgumentError(f"view {f.view}:{f.view_version} is keyed by both {seen!r} and {f.entity!r}")
    kinds = tuple(dict.fromkeys(by_view.values()))
    if entities is not None and tuple(entities) != kinds:
        raise InvalidArgumentError(f"entities {list(entities)} differ from the features' entities {list(kinds)}")
    return kinds


def _check_vocabularies(features: Sequence[FeatureRef], vocabularies: Sequence[Vocabulary]) -> None:
    """Each vocabulary names a feature column of the version, at most one per column."""
    columns = {f.column for f in features}
    seen: set[str] = set()
    for v in vocabularies:
        if v.column not in columns:
            raise InvalidArgumentError(f"vocabulary for {v.column!r}, which is not a feature of this version")
        if v.column in seen:
            raise InvalidArgumentError(f"two vocabularies for {v.column!r}")
        seen.add(v.column)


class ModelRegistry:
    def __init__(self, store: BlobStore, events: ModelEventSink | None = None) -> None:
        self.store = store
        self.events = events
        # Version records are immutable, so they can be cached forever.
        self._cache: dict[tuple[str, int], ModelVersionRecord] = {}

    @classmethod
    def from_uri(cls, uri: str, events: ModelEventSink | None = None) -> ModelRegistry:
        """A registry in a local directory (plain path or file://) or at any fsspec URI."""
        return cls(open_store(uri), events)

    # ---- versions -------------------------------------------------------------------------

    def models(self) -> list[str]:
        return [m for m in self.store.list("models") if self.store.list(safe_key("models", m, "versions"))]

    def _version_numbers(self, model: str) -> list[int]:
        return _seq_numbers(self.store.list(safe_key("models", check_model_name(model), "versions")))

    def versions(self, model: str) -> list[ModelVersionRecord]:
        return [self.get(model, v) for v in self._version_numbers(model)]

    def latest(self, model: str) -> ModelVersionRecord | None:
        numbers = self._version_numbers(model)
        return self.get(model, numbers[-1]) if numbers else None

    def get(self, model: str, version: int) -> ModelVersionRecord:
        check_model_name(model)
        cached = self._cache.get((model, version))
        if cached is not None:
            return cached
        if version < 1:
            raise NotFoundError(f"model {model} has no version {version}")
        try:
            data = self.store.read(safe_key("models", model, "versions", _seq_name(version)))
        except NotFoundError as exc:
            raise NotFoundError(f"model {model} has no version {version}") from exc
        record = ModelVersionRecord.from_json(data)
        if record.model != model or record.version != version:
            raise IntegrityError(f"model {model} version {version}: record names {record.model} v{record.version}")
        self._cache[(model, version)] = record
        return record

    def publish(
        self,
        model: str,
        artefact: bytes,
        *,
        features: Sequence[FeatureRef],
        entities: Sequence[str] | None = None,
        snapshot_id: str,
        code_version: str,
        params: Mapping[str, str],
        metrics: Mapping[str, float],
        task: str,
        label: LabelRef | None = None,
        holdout: bytes | None = None,
        flavor: str = LIGHTGBM,
        vocabularies: Sequence[Vocabulary] = (),
    ) -> ModelVersionRecord:
        """Store a new immutable version and emit VersionPublished; returns its record.

        Every feature must name its view's entity (the version is then all a server needs);
        `entities`, when given, must be the features' distinct kinds in order. The flavor must
        be one this process can load.
        """
        check_model_name(model)
        kind = Task.parse(task)
        get_flavor(flavor, what=f"model {model}")
        kinds = _checked_entities(features, entities)
        _check_vocabularies(features, vocabularies)
        if not artefact:
            raise InvalidArgumentError("empty artefact")
        digest = sha256_hex(artefact)
        artefact_key = self._put_artefact(model, digest, "txt", artefact)
        holdout_key, holdout_digest = "", ""
        if holdout is not None:
            holdout_digest = sha256_hex(holdout)
            holdout_key = self._put_artefact(model, holdout_digest, "parquet", holdout)

        def attempt(version: int) -> ModelVersionRecord:
            return ModelVersionRecord(
                model=model,
                version=version,
                sha256=digest,
                artefact_uri=artefact_key,
                features=tuple(features),
                entities=kinds,
                snapshot_id=snapshot_id,
                code_version=code_version,
                params={str(k): str(v) for k, v in params.items()},
                metrics={str(k): float(v) for k, v in metrics.items()},
                created_at_ms=_now_ms(),
                task=kind,
                label=label,
                flavor=flavor,
                holdout_uri=holdout_key,
                holdout_sha256=holdout_digest,
                vocabularies=tuple(vocabularies),
            )

        record = self._commit_next(
            safe_key("models", model, "versions"), attempt, lambda r: r.to_json(), f"model {model}"
        )
        self._cache[(model, record.version)] = record
        self._emit(new_event(published=models_pb2.VersionPublished(version=record.to_proto())))
        return record

    def _put_artefact(self, model: str, digest: str, ext: str, data: bytes) -> str:
        key = safe_key("models", model, "artefacts", f"{digest}.{ext}")
        # Content-addressed: an existing object already holds exactly these bytes.
        self.store.put_exclusive(key, data)
        return key

    def _commit_next(self, folder: str, build: Callable[[int], _T], encode: Callable[[_T], bytes], what: str) -> _T:
        """Create `folder/<n+1>.json` exclusively, retrying on the next number when raced."""
        for _ in range(_MAX_RACE_RETRIES):
            numbers = _seq_numbers(self.store.list(folder))
            number = (numbers[-1] if numbers else 0) + 1
            item = build(number)
            if self.store.put_exclusive(safe_key(folder, _seq_name(number)), encode(item)):
                return item
        raise ConflictError(f"{what}: gave up after {_MAX_RACE_RETRIES} concurrent-write retries")

    def load_artefact(self, model: str, version: int) -> bytes:
        """The version's model bytes, verified against its SHA-256 before they are returned."""
        record = self.get(model, version)
        data = self._read_verified(record.artefact_uri, record.sha256, f"model {model} version {version} artefact")
        return data

    def load_predictor(self, model: str, version: int, *, num_threads: int = 0) -> Predictor:
        """The version loaded by its flavor, after the SHA-256 check.

        An unknown flavor is an UnknownFlavorError before any byte is read; a hash mismatch an
        IntegrityError; bytes the flavor cannot parse an IntegrityError too.
        """
        record = self.get(model, version)
        what = f"model {model} version {version}"
        get_flavor(record.flavor, what=what)
        data = self.store.read(safe_key(record.artefact_uri))
        return load_predictor(record.flavor, data, sha256=record.sha256, num_threads=num_threads, what=what)

    def verify_version(self, model: str, version: int) -> ModelVersionRecord:
        """The version's record, once its artefact matches its SHA-256 and loads as its flavor's model.

        Raises IntegrityError (bytes changed, or not a model), InvalidArgumentError (the model
        disagrees with its record) or NotFoundError (no such version or artefact).
        """
        record = self.get(model, version)
        verify_loadable(record, self.load_predictor(model, version, num_threads=1))
        return record

    def load_holdout(self, model: str, version: int) -> bytes | None:
        """The held-out rows (parquet) the version was validated on, verified; None if none were stored."""
        record = self.get(model, version)
        if not record.holdout_uri:
            return None
        return self._read_verified(
            record.holdout_uri, record.holdout_sha256, f"model {model} version {version} holdout"
        )

    def _read_verified(self, uri: str, expected: str, what: str) -> bytes:
        # The key comes from a stored record: check it again before touching the store.
        data = self.store.read(safe_key(uri))
        actual = sha256_hex(data)
        if actual != expected:
            raise IntegrityError(f"{what}: SHA-256 mismatch (recorded {expected}, stored bytes {actual}); refused")
        return data

    # ---- aliases --------------------------------------------------------------------------

    def _alias_folder(self, model: str, alias: str) -> str:
        return safe_key("models", check_model_name(model), "aliases", check_alias(alias))

    def alias_history(self, model: str, alias: str) -> list[AliasMoveRecord]:
        folder = self._alias_folder(model, alias)
        numbers = _seq_numbers(self.store.list(folder))
        return [AliasMoveRecord.from_json(self.store.read(safe_key(folder, _seq_name(n)))) for n in numbers]

    def aliases(self, model: str) -> dict[str, int]:
        """Every alias of the model and its current holder."""
        folder = safe_key("models", check_model_name(model), "aliases")
        out: dict[str, int] = {}
        for alias in self.store.list(folder):
            holder = current_holder(self.alias_history(model, alias))
            if holder is not None:
                out[alias] = holder
        return out

    def resolve(self, model: str, alias: str) -> ModelVersionRecord | None:
        holder = current_holder(self.alias_history(model, alias))
        return None if holder is None else self.get(model, holder)

    def alias_at(self, model: str, alias: str, at_ms: int) -> int | None:
        return holder_at(self.alias_history(model, alias), at_ms)

    def move_alias(
        self,
        model: str,
        alias: str,
        version: int,
        *,
        kind: str = "set",
        actor: str,
        reason: str = "",
        evidence: Mapping[str, float] | None = None,
        expected_from: int | None = -1,
    ) -> AliasMoveRecord:
        """Point `alias` at `version`, append the move to the history and emit AliasMoved.

        `expected_from` (default: don't care) makes the move conditional on the current
        holder, so a promoter never overrides a move it did not see.

        The target must be loadable (`verify_version`): a corrupt or unparsable artefact is
        refused with nothing moved and nothing emitted, since every server started after the
        move would refuse it and stay NOT_SERVING.
        """
        if kind not in ALIAS_MOVE_KINDS:
            raise InvalidArgumentError(f"alias move kind {kind!r} is not one of {sorted(ALIAS_MOVE_KINDS)}")
        folder = self._alias_folder(model, alias)
        self._check_target(model, alias, version)

        def build(sequence: int) -> AliasMoveRecord:
            # A longer history means another mover took `sequence`; the exclusive create fails and retries.
            history = self.alias_history(model, alias)[: sequence - 1]
            holder = current_holder(history)
            if expected_from != -1 and holder != expected_from:
                raise ConflictError(f"{model}@{alias} is held by {holder}, not {expected_from}")
            last_ms = history[-1].at_ms if history else 0
            return AliasMoveRecord(
                model=model,
                alias=alias,
                from_version=holder,
                to_version=version,
                kind=kind,
                actor=actor,
                reason=reason,
                evidence=dict(evidence or {}),
                sequence=sequence,
                # Kept non-decreasing so "holder at time T" follows the sequence order.
                at_ms=max(_now_ms(), last_ms),
            )

        move = self._commit_next(folder, build, lambda m: m.to_json(), f"{model}@{alias}")
        self._emit(new_event(alias_moved=move.to_proto()))
        return move

    def _check_target(self, model: str, alias: str, version: int) -> None:
        self.get(model, version)  # an unknown version: the plain NotFoundError
        try:
            self.verify_version(model, version)
        except (IntegrityError, InvalidArgumentError, NotFoundError) as exc:
            raise type(exc)(f"{model}@{alias} not moved to v{version}: {exc}") from exc

    def rollback(self, model: str, alias: str, *, actor: str, reason: str = "") -> AliasMoveRecord:
        """Move the alias back to the holder it had before the current one.

        A previous holder whose artefact no longer loads is refused, not skipped: walking
        further back would silently serve a version nobody chose. Nothing moves; the error
        names the version, and a person promotes a known-good one explicitly.
        """
        history = self.alias_history(model, alias)
        target = rollback_target(history)
        if target is None:
            raise ConflictError(f"{model}@{alias} has no earlier holder to roll back to")
        try:
            return self.move_alias(
                model,
                alias,
                target,
                kind="rolled_back",
                actor=actor,
                reason=reason,
                expected_from=current_holder(history),
            )
        except (IntegrityError, InvalidArgumentError, NotFoundError) as exc:
            hint = f"promote a known-good version instead: fti registry promote {model} VERSION --alias {alias}"
            raise type(exc)(f"rollback refused, {exc}; {hint}") from exc

    # ---- promotion decisions --------------------------------------------------------------

    def _decision_key(self, model: str, alias: str, candidate: int) -> str:
        return safe_key("models", check_model_name(model), "decisions", check_alias(alias), _seq_name(candidate))

    def decision(self, model: str, alias: str, candidate: int) -> PromotionDecisionRecord | None:
        key = self._decision_key(model, alias, candidate)
        if not self.store.exists(key):
            return None
        return PromotionDecisionRecord.from_json(self.store.read(key))

    def record_decision(self, decision: PromotionDecisionRecord) -> bool:
        """Keep the verdict (first one wins) and emit PromotionDeclined when it declined."""
        key = self._decision_key(decision.model, decision.alias, decision.candidate_version)
        created = self.store.put_exclusive(key, decision.to_json())
        if created and not decision.promoted:
            self._emit(new_event(promotion_declined=decision.to_proto()))
        return created

    def _emit(self, event: models_pb2.ModelEvent) -> None:
        if self.events is None:
            return
        try:
            self.events.emit(event)
        except UnavailableError as exc:
            # The change is committed; only the notification is lost, and consumers catch up
            # from the registry. Say so, so nobody retries the publish.
            raise UnavailableError(f"{exc} (the registry change itself is committed)") from exc
