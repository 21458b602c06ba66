from __future__ import annotations

from pathlib import Path

import pytest

from featurestore.catalogue import Catalogue, DefinitionChangedError
from featurestore.definitions import FeatureViewDef


def _view(size: str = "10m", description: str = "") -> FeatureViewDef:
    return FeatureViewDef.model_validate(
        {
            "name": "card_activity",
            "version": 1,
            "source": "transaction",
            "entity": "card_id",
            "ttl": "1d",
            "description": description,
            "features": [{"name": "n", "agg": "count", "window": {"size": size}}],
        }
    )


def test_changed_content_with_same_version_is_refused_naming_the_view(tmp_path: Path) -> None:
    cat = Catalogue(str(tmp_path))
    cat.register([_view()])
    cat.register([_view(description="only the words changed")])  # description is not content
    with pytest.raises(DefinitionChangedError, match="card_activity:1"):
        cat.register([_view(size="1h")])
    assert [v.ref for v in cat.views()] == ["card_activity:1"]


def test_a_new_version_is_accepted(tmp_path: Path) -> None:
    cat = Catalogue(str(tmp_path))
    cat.register([_view()])
    v2 = _view(size="1h").model_copy(update={"version": 2})
    cat.register([v2])
    assert cat.get("card_activity", 2) == v2
