"""The feature-view catalogue: every (view, version) ever registered, with its content hash.

A view's content is fixed per version. Registering a definition whose content differs from
the recorded one for the same (name, version) is refused with a message naming the view, so
online keys, offline partitions and model metadata that name `view:version` always mean one
definition. Entries live in the offline store as `catalogue/<view>/v<version>.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import fsspec

from featurestore.definitions import DefinitionError, FeatureViewDef

__all__ = ["Catalogue", "DefinitionChangedError"]


class DefinitionChangedError(DefinitionError):
    """A view's content changed while its version did not."""


class Catalogue:
    def __init__(self, offline_root: str) -> None:
        self._fs, path = fsspec.core.url_to_fs(offline_root)
        self._root = path.rstrip("/") + "/catalogue"

    def _path(self, name: str, version: int) -> str:
        return f"{self._root}/{name}/v{version}.json"

    def get(self, name: str, version: int) -> FeatureViewDef | None:
        path = self._path(name, version)
        if not self._fs.exists(path):
            return None
        with self._fs.open(path, "r") as fh:
            return FeatureViewDef.model_validate(json.load(fh)["definition"])

    def check(self, views: Iterable[FeatureViewDef]) -> None:
        """Refuse any view whose content differs from its catalogued version."""
        for view in views:
            known = self.get(view.name, view.version)
            if known is not None and known.content_hash() != view.content_hash():
                raise DefinitionChangedError(
                    f"view {view.ref}: its definition changed but its version did not "
                    f"(catalogued hash {known.content_hash()[:12]}, new {view.content_hash()[:12]}); "
                    f"give the changed view a new version"
                )

    def register(self, views: Iterable[FeatureViewDef]) -> None:
        """Record views (idempotent); refuses changed content before writing anything."""
        views = list(views)
        self.check(views)
        for view in views:
            path = self._path(view.name, view.version)
            if self._fs.exists(path):
                continue
            self._fs.makedirs(f"{self._root}/{view.name}", exist_ok=True)
            doc = {"definition": view.document(), "content_hash": view.content_hash()}
            tmp = f"{path}.tmp"
            with self._fs.open(tmp, "w") as fh:
                json.dump(doc, fh, sort_keys=True, indent=1)
            self._fs.mv(tmp, path)

    def views(self) -> list[FeatureViewDef]:
        if not self._fs.exists(self._root):
            return []
        out = []
        for path in sorted(self._fs.glob(f"{self._root}/*/v*.json")):
            with self._fs.open(path, "r") as fh:
                out.append(FeatureViewDef.model_validate(json.load(fh)["definition"]))
        return out
