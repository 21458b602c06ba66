"""Which features a caller asks for: `view:version:feature` / `view:feature` refs, or a model's feature set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from featurestore.definitions import DefinitionError, Definitions, FeatureViewDef
from featurestore.pit import feature_column

__all__ = ["FeatureSelection", "ViewSelection", "select_features"]


@dataclass(frozen=True)
class ViewSelection:
    """One view version and the features of it that were asked for, in the order asked."""

    view: FeatureViewDef
    features: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return [feature_column(self.view.name, f) for f in self.features]


@dataclass(frozen=True)
class FeatureSelection:
    """The views to read, in first-asked order; `columns` is the output order of the features."""

    views: tuple[ViewSelection, ...]
    columns: tuple[str, ...]

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.view.entity for v in self.views))


def _parse(definitions: Definitions, ref: str) -> tuple[FeatureViewDef, str]:
    parts = ref.split(":")
    if len(parts) == 3 and parts[1].isdigit():
        view = definitions.view(parts[0], int(parts[1]))
    elif len(parts) == 2:
        view = definitions.view(parts[0])
    else:
        raise DefinitionError(f"feature ref {ref!r}: use view:version:feature or view:feature")
    if parts[-1] not in view.feature_names:
        raise DefinitionError(f"feature ref {ref!r}: view {view.ref} has no feature {parts[-1]!r}")
    return view, parts[-1]


def select_features(definitions: Definitions, features: str | Sequence[str]) -> FeatureSelection:
    """A model name (all features of its views, as the trainer orders them) or a list of refs."""
    if isinstance(features, str):
        if not any(m.name == features for m in definitions.models):
            raise DefinitionError(f"{features!r} is not a model of the definitions; pass a list of feature refs")
        refs = [f"{v.name}:{v.version}:{f}" for v in definitions.model_views(features) for f in v.feature_names]
    else:
        refs = list(features)
    if not refs:
        raise DefinitionError("no features asked for")
    picked: dict[tuple[str, int], tuple[FeatureViewDef, list[str]]] = {}
    for ref in refs:
        view, name = _parse(definitions, ref)
        got = picked.setdefault((view.name, view.version), (view, []))[1]
        if name not in got:
            got.append(name)
    names = [v.name for v, _ in picked.values()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DefinitionError(f"views {twice} asked for in two versions: their columns would have the same names")
    views = tuple(ViewSelection(v, tuple(fs)) for v, fs in picked.values())
    return FeatureSelection(views, tuple(c for v in views for c in v.columns))
