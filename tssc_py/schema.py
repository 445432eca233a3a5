"""The Nextflow pipeline's copies of the library's lists, written from the library.

The pipeline validates its parameters before anything runs, in Groovy, from
``nextflow_schema.json``; it cannot import Python. So the lists it needs (method names, model
kinds, presets, devices...) are copied into the schema and into the pipeline's Groovy by
``python -m tssc_py.schema``, and ``python -m tssc_py.schema --check`` (a test runs it) fails
while a copy differs from the library.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tssc_py.baselines import MODELS
from tssc_py.device import DEVICES
from tssc_py.methods import method_names
from tssc_py.methods.base import method_class
from tssc_py.metrics import SSIM_MODES
from tssc_py.stage1 import WEIGHTS
from tssc_py.stage1.interpolator import FLIPS
from tssc_py.stage1.model import PRESETS as STAGE1_PRESETS
from tssc_py.stage2.model import PRESETS as STAGE2_PRESETS
from tssc_py.stage2.ssm import BACKENDS
from tssc_py.synth import KINDS
from tssc_py.training import AUTO_PRESET

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "nextflow_schema.json"
UTILS = "subworkflows/local/utils_tssc_pipeline/main.nf"

ENUMS: dict[str, Callable[[], list[object]]] = {
    "refine_method": lambda: list(method_names()),
    "ssim": lambda: list(SSIM_MODES),
    "device": lambda: list(DEVICES),
    "flips": lambda: list(FLIPS),
    "weights": lambda: list(WEIGHTS),
    "backend": lambda: list(BACKENDS),
    "train_stage1_preset": lambda: [AUTO_PRESET, *STAGE1_PRESETS],
    "train_stage2_preset": lambda: [AUTO_PRESET, *STAGE2_PRESETS],
    "synth_kind": lambda: list(KINDS),
}
"""Parameters whose ``enum`` is a library list."""

LISTS: dict[str, tuple[Callable[[], Sequence[str]], bool]] = {
    "methods": (method_names, False),
    "cpu_methods": (method_names, True),
    "train_baselines": (lambda: MODELS, False),
}
"""Comma-separated parameters of a library list's names, and whether they may be empty."""


def checkpoint_kinds() -> dict[str, str]:
    """Each learned method's checkpoint kind (its ``config.json`` ``kind``)."""
    kinds = {name: method_class(name).checkpoint_kind for name in method_names()}
    return {name: kind for name, kind in kinds.items() if kind is not None}


def _list_pattern(names: Sequence[str], optional: bool) -> str:
    alternation = "|".join(names)
    body = f"({alternation})(,({alternation}))*"
    return f"^({body})?$" if optional else f"^{body}$"


def schema_text(text: str) -> str:
    """``nextflow_schema.json``'s text with the library's lists."""
    schema = json.loads(text)
    properties = {
        name: spec
        for group in schema["$defs"].values()
        for name, spec in group["properties"].items()
    }
    for name, values in ENUMS.items():
        properties[name]["enum"] = values()
    for name, (names, optional) in LISTS.items():
        listed = list(names())
        properties[name]["pattern"] = _list_pattern(listed, optional)
        message = f"--{name} is a comma-separated list of {', '.join(listed)}"
        properties[name]["errorMessage"] = message + (" (or empty)" if optional else "")
    return json.dumps(schema, indent=4, ensure_ascii=False) + "\n"


def utils_text(text: str) -> str:
    """The pipeline's Groovy helpers with each learned method's checkpoint kind."""
    kinds = checkpoint_kinds()
    table = ", ".join(f"{name}: '{kind}'" for name, kind in kinds.items())
    listed = ", ".join(f"'{kind}'" for kind in dict.fromkeys(kinds.values()))
    text = re.sub(r"(?m)^(\s*return )\[\w+: '.*'\](\[method\])$", rf"\g<1>[{table}]\g<2>", text)
    return re.sub(r"(?m)^(\s*def kinds = )\[.*\]$", rf"\g<1>[{listed}]", text)


WRITERS: dict[str, Callable[[str], str]] = {SCHEMA: schema_text, UTILS: utils_text}


def stale(repo: Path = REPO) -> list[str]:
    """The pipeline files whose copies of the lists differ from the library's."""
    return [
        name
        for name, write in WRITERS.items()
        if write((repo / name).read_text()) != (repo / name).read_text()
    ]


def main(argv: list[str] | None = None) -> None:
    """Write the lists into the pipeline's files, or with ``--check`` say which differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Change nothing; exit 1 if stale.")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"{name}: differs from the library's lists (run python -m tssc_py.schema)")
        sys.exit(1 if names else 0)
    for name, write in WRITERS.items():
        path = REPO / name
        text = write(path.read_text())
        if text != path.read_text():
            path.write_text(text)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
