"""The benchmark scripts' own checks: option errors, FLOP counting, recipe folders (CPU, fast).

The scripts are loaded from ``benchmarks/`` by path under other names: that folder is not a
package, and some of its module names (``stage1``, ``baselines``) are also test packages here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch

from tssc_py.errors import TsscError
from tssc_py.stage1.interpolator import linear_prior
from tssc_py.stage1.model import DiTConfig, VideoDiT

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
# Appended, not prepended: the scripts' own imports (bench_common, recipes) must resolve, while
# the test packages named like two scripts keep priority.
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

from bench_common import run_script, run_worker  # noqa: E402
from recipes import (  # noqa: E402
    MOVING_TESTS,
    RESULTS,
    make_data,
    moving_cohorts,
    open_run,
    plain_cohorts,
    write_results,
)


def load(name: str) -> ModuleType:
    """The script ``benchmarks/NAME.py`` as a module named ``bench_NAME``."""
    module_name = f"bench_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def one_error_line(capsys: pytest.CaptureFixture[str], script: str, argv: list[str]) -> str:
    """Run a script's main on ``argv``; assert status 1 and one ``Error:`` line; return it."""
    status = run_script(load(script).main, argv)
    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


BAD_OPTIONS = [
    ("stage1_sampling", ["--device", "cpu", "--size", "30"], "patch size 4"),
    ("stage1_sampling", ["--device", "cpu", "--size", "0"], "at least 1"),
    ("stage1_sampling", ["--device", "cpu", "--slices", "0"], "at least 1"),
    ("stage1_sampling", ["--device", "cpu", "--steps", "0"], "at least 1"),
    ("stage1_sampling", ["--device", "cpu", "--batch-size", "0"], "at least 1"),
    ("stage1_sampling", ["--device", "cpu", "--every", "0"], "at least 1"),
    ("stage1_sampling", ["--device", "cpu", "--every", "1"], "nothing to fill"),
    ("stage1_sampling", ["--device", "cpu", "--repeats", "0"], "at least 1"),
    ("stage1_sampling", ["--device", "cpu", "--flips", "3"], "flips must be one of"),
    ("stage1_sampling", ["--device", "cpu", "--preset", "DiT_XXL"], "unknown DiT preset"),
    ("stage1_attention", ["--device", "cpu", "--size", "30"], "patch size 4"),
    ("stage1_attention", ["--device", "cpu", "--calls", "0"], "at least 1"),
    ("stage1_attention", ["--device", "cpu", "--preset", "DiT_XXL"], "unknown DiT preset"),
    ("stage1_speed", ["--size", "12"], "multiple of 8"),
    ("stage1_speed", ["--size", "0"], "at least 1"),
    ("stage1_speed", ["--seconds", "0"], "above 0"),
    ("stage2", ["--seconds", "0"], "above 0"),
    ("io", ["--frames", "2"], "at least 3 frames"),
    ("io", ["--size", "7"], "at least 8"),
    ("baselines", ["--steps", "0"], "at least 1"),
    ("stage1", ["--test-subjects", "0"], "at least 1"),
    (
        "stage1",
        ["--train-knee", "1", "--train-cardiac", "1", "--train-turning", "0"],
        "leave none for training",
    ),
    ("stage2_recipe", ["--w-tv", "-1"], "at least 0"),
    ("pipeline", ["--out", "."], "exists; give a new folder"),
    ("priors", ["--stage1-run", "nowhere"], "no such folder"),
]


@pytest.mark.parametrize(("script", "argv", "says"), BAD_OPTIONS)
def test_bad_option_is_one_error_line(capsys, monkeypatch, tmp_path, script, argv, says):
    # In a scratch folder: an option that is not refused runs the whole recipe in --out.
    monkeypatch.chdir(tmp_path)
    assert says in one_error_line(capsys, script, argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("script", ["stage1_sampling", "stage1_attention", "stage2"])
def test_cuda_without_gpu_is_one_error_line(capsys, script):
    assert "no CUDA device" in one_error_line(capsys, script, ["--device", "cuda"])


@pytest.mark.parametrize("script", ["stage1", "baselines", "stage2_recipe"])
def test_out_under_a_file_is_one_error_line(capsys, tmp_path, script):
    (tmp_path / "file").touch()
    argv = ["--out", str(tmp_path / "file" / "run")]
    if script == "stage2_recipe":  # its stage-1 folder is checked first
        argv += ["--stage1-run", str(made_stage1_run(tmp_path))]
    assert "is a file" in one_error_line(capsys, script, argv)


def made_stage1_run(tmp_path: Path) -> Path:
    """A folder with the names stage2_recipe.py checks for (empty: it fails before reading)."""
    run = tmp_path / "stage1_run"
    for name in ("stage1/checkpoint", "prepared", *MOVING_TESTS):
        (run / name).mkdir(parents=True)
    for name in MOVING_TESTS:
        (run / name / "samplesheet.csv").touch()
    return run


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        load("stage1").main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Held-out subjects per cohort" in text and "(default: 6)" in text


def test_cpu_flop_count_includes_attention():
    """On the CPU, torch's counter has no formula for the attention operator it runs; the
    benchmark's counter must count it as Q K^T plus A V of every attention call."""
    sampling = load("stage1_sampling")
    config = DiTConfig(patch_size=4, hidden=16, depth=2, heads=2, priors=1)
    model = VideoDiT(config).eval()
    batch, frames, size = 2, 4, 16
    x = torch.rand(batch, frames, size, size)
    known = torch.zeros(batch, frames, dtype=torch.bool)
    known[:, [0, -1]] = True
    counter = sampling.flop_counter()
    with torch.no_grad(), counter:
        model(x, torch.full((batch,), 10), known, linear_prior(x, known)[:, :, None])
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    attention = sum(flops for op, flops in counts.items() if "scaled_dot_product" in op)
    tokens = (size // config.patch_size) ** 2
    # Per block: temporal attention (each token's series of `frames`) and spatial attention
    # (each frame's `tokens`); each call costs 2 * L^2 * width for Q K^T and as much for A V.
    per_block = 4 * batch * config.hidden * (tokens * frames**2 + frames * tokens**2)
    assert attention == config.depth * per_block, counts
    assert counter.get_total_flops() == sum(counts.values())


def test_attention_table_has_every_implementation(capsys):
    """Both attention shapes of a model call, each implementation timed or marked unavailable,
    every timed one agreeing with the float64 computation."""
    argv = ["--device", "cpu", "--size", "8", "--slices", "1", "--frames", "3"]
    assert run_script(load("stage1_attention").main, [*argv, "--calls", "1", "--repeats", "1"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[4:]]
    # 2x2 patches: temporal (4 series of 3 frames), spatial (3 frames of 4 tokens).
    assert [(row[0], row[1]) for row in rows] == [("| temporal", "(4, 2, 3, 32)")] * 7 + [
        ("| spatial", "(3, 2, 4, 32)")
    ] * 7
    timed = [row for row in rows if row[3] != "not available"]
    assert {row[2] for row in timed} >= {"sdpa math", "matmul + softmax", "model (as tssc runs it)"}
    assert all(float(row[6].rstrip(" |")) < 1e-5 for row in timed), timed


def test_io_worker_writes_inside_its_folder(tmp_path, capsys):
    work = tmp_path / "work"
    argv = ["--worker", "synth", "--workdir", str(work), "--size", "16", "--depth", "2"]
    assert run_script(load("io").main, [*argv, "--frames", "3"]) == 0
    assert capsys.readouterr().out.strip() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["work"]
    assert (work / "subject01.nii.gz").is_file()


def test_existing_cohort_of_other_counts_is_refused(tmp_path, capsys):
    make_data(tmp_path, plain_cohorts(0, 0, 1))
    make_data(tmp_path, plain_cohorts(0, 0, 1))  # the same counts: reused
    for counts in ((0, 0, 2), (0, 0, 0)):
        with pytest.raises(TsscError, match="subject"):
            make_data(tmp_path, plain_cohorts(*counts))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cardiac", "knee"]


def test_moving_cohorts_are_named_after_their_folders(tmp_path, capsys):
    cohorts = {k: v for k, v in moving_cohorts(0, 0, 1, 1).items() if k.endswith("turning")}
    make_data(tmp_path, cohorts)
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == [
        "cardiac_turning_000.json", "cardiac_turning_000.nii.gz",
        "knee_turning_000.json", "knee_turning_000.nii.gz",
    ]  # fmt: skip
    assert (tmp_path / "knee_turning" / "knee_turning_000.nii.gz").is_file()


def test_run_folder_needs_resume_or_overwrite(tmp_path, capsys):
    outputs = ("stage1", "test_knee", RESULTS)
    (tmp_path / "stage1").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    table = pd.DataFrame({"kind": ["knee"], "psnr": [20.0]})
    write_results(table, tmp_path, replace=False)
    with pytest.raises(TsscError, match=r"--resume .* --overwrite"):
        open_run(tmp_path, outputs, resume=False, overwrite=False)
    with pytest.raises(TsscError, match="exclude"):
        open_run(tmp_path, outputs, resume=True, overwrite=True)
    with pytest.raises(TsscError, match="exists"):
        write_results(table, tmp_path, replace=False)
    open_run(tmp_path, outputs, resume=True, overwrite=False)  # kept for the resume
    write_results(table.assign(psnr=21.0), tmp_path, replace=True)
    assert pd.read_csv(tmp_path / RESULTS)["psnr"].tolist() == [21.0]
    open_run(tmp_path, outputs, resume=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_worker_error_line_is_passed_on():
    fails = [sys.executable, "-c", "import sys; sys.exit('Error: no such scan')"]
    with pytest.raises(TsscError, match=r"^step prepare: no such scan$"):
        run_worker(fails, "step prepare")
    crashes = [sys.executable, "-c", "raise RuntimeError('a bug')"]
    with pytest.raises(subprocess.CalledProcessError):
        run_worker(crashes, "step prepare")


def test_temporal_attention_rerouted_to_matrix_products(monkeypatch: pytest.MonkeyPatch) -> None:
    """--temporal-attention matmul: calls over the frames run as matrix products, the others
    (the spatial attention) as before."""
    sampling = load("stage1_sampling")
    fused = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", fused)
    sampling.route_temporal_attention("matmul", 3)
    routed = torch.nn.functional.scaled_dot_product_attention
    assert routed is not fused
    calls: list[int] = []
    real_matmul = sampling.matmul_attention

    def counted(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        calls.append(q.shape[-2])
        return real_matmul(q, k, v)

    monkeypatch.setattr(sampling, "matmul_attention", counted)
    for length in (3, 5):
        q, k, v = torch.randn(3, 2, 2, length, 8).unbind(0)
        torch.testing.assert_close(routed(q, k, v), fused(q, k, v))
    assert calls == [3]


def test_temporal_attention_choices_of_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """--temporal-attention model keeps the model's kernel choice; sdpa gives every call to
    torch's own choice."""
    sampling = load("stage1_sampling")
    fused = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", fused)
    monkeypatch.setattr(sampling.dit, "SHORT_ATTENTION", sampling.dit.SHORT_ATTENTION)
    short = sampling.dit.SHORT_ATTENTION
    sampling.route_temporal_attention("model", 12)
    assert sampling.dit.SHORT_ATTENTION == short > 12
    assert torch.nn.functional.scaled_dot_product_attention is fused
    sampling.route_temporal_attention("sdpa", 12)
    assert sampling.dit.SHORT_ATTENTION == 0
    assert torch.nn.functional.scaled_dot_product_attention is fused
