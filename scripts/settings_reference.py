"""Print the settings reference (Markdown) from the settings classes themselves.

One table per process (shared settings first), then the renamed settings whose old names
still work for one release. The README embeds this output between `<!-- settings:begin -->`
and `<!-- settings:end -->`; `--write` refreshes it there, and a test fails when the README
has drifted from the code.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from feature_stream.settings import FeatureStreamSettings
from fti_cli.stack.settings import StackSettings
from fti_core.settings import FtiSettings, file_key
from fti_core.settings_renames import RENAMED
from inference_grpc.settings import InferenceSettings, PredictSettings
from registry.models.settings import RegistrySettings
from trainer.settings import TrainerSettings

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"

SECTIONS: list[tuple[str, type[FtiSettings]]] = [
    ("Every process (shared)", FtiSettings),
    ("`fti stack`", StackSettings),
    ("`fti features` (worker, backfill, verify)", FeatureStreamSettings),
    ("`fti registry` (the promoter)", RegistrySettings),
    ("`fti train`", TrainerSettings),
    ("`fti serve`", InferenceSettings),
    ("`fti predict`", PredictSettings),
]


def _default(info: FieldInfo) -> str:
    value: Any = info.get_default(call_default_factory=True)
    if value is None:
        return "—"
    if hasattr(value, "get_secret_value"):
        return "*(secret)*"
    return f"`{value}`"


def render() -> str:
    lines: list[str] = []
    for title, cls in SECTIONS:
        own = FtiSettings.model_fields if cls is FtiSettings else cls.model_fields.keys() - FtiSettings.model_fields
        rows = [(name, info) for name, info in cls.model_fields.items() if name in own]
        lines += [f"**{title}**", "", "| variable | config file | default | meaning |", "| --- | --- | --- | --- |"]
        for name, info in rows:
            env = cls.env_name(name)
            desc = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{env}` | `{file_key(env)}` | {_default(info)} | {desc} |")
        lines.append("")
    lines += [
        "**Renamed** (the old name still works until the next release, with a warning)",
        "",
        "| old name | new name |",
        "| --- | --- |",
    ]
    for r in RENAMED:
        note = f" (`fti {'features' if r.only == 'WORKER' else r.only.lower()}` only)" if r.only else ""
        if r.zero_disables:
            note += f"; its old 0 (off) becomes `{r.zero_disables}=false`"
        lines.append(f"| `{r.old}` | `{r.new}`{note} |")
    return "\n".join(lines).rstrip() + "\n"


def embedded(readme: str) -> str:
    match = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), readme, re.S)
    if match is None:
        raise SystemExit(f"README.md has no {BEGIN} … {END} block")
    return match.group(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="refresh the block in README.md")
    args = parser.parse_args()
    table = render()
    if args.write:
        text = README.read_text()
        embedded(text)  # fails clearly when the markers are missing
        block = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END), re.S)
        README.write_text(block.sub(lambda _: f"{BEGIN}\n{table}{END}", text, count=1))
        print("README.md settings reference refreshed", file=sys.stderr)
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
