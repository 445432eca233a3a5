"""The README's Python example runs as written and prints nothing but its own output."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _python_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return code


def test_the_python_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_python_example(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        # The environment's own path too (packages installed with --target, HPC modules).
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1",
        },
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # The one print: a table of the 4 predicted frames; the library itself prints nothing.
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["frame", "psnr", "ssim"] and len(lines) == 5
    assert (tmp_path / "demo_py" / "run" / "report" / "report.html").is_file()


def test_every_promise_names_tests_that_exist() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## What tssc will never do", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", section)
    promises = section.count("\n- **")
    assert promises >= 6 and len(named) >= 2 * promises
    for path, name in named:
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        tests = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in tests, f"{path} has no test {name}"
