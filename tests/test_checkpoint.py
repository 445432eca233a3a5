"""Checkpoint folders: safetensors + JSON round trip, atomic replacement, clear errors."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import REPO, assert_one_line_error, run_cli
from tssc_py.checkpoint import (
    load_checkpoint,
    load_optimizer_state,
    optimizer_state,
    save_checkpoint,
)
from tssc_py.errors import TsscError
from tssc_py.training import Run


def _save(path: Path, value: float = 1.0) -> Path:
    return save_checkpoint(
        path,
        {"kind": "test", "value": value},
        {"model": {"w": torch.full((2, 3), value), "b": torch.zeros(3)}},
        {"training": {"step": 3}},
    )


def test_round_trip_without_pickle(tmp_path: Path) -> None:
    path = _save(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "training.json",
    ]
    ckpt = load_checkpoint(path, "test")
    assert ckpt.config["value"] == 1.0 and "tssc_version" in ckpt.config
    assert torch.equal(ckpt.tensors("model")["w"], torch.ones(2, 3))
    assert ckpt.json("training") == {"step": 3}
    assert ckpt.has("model") and not ckpt.has("ema")


def test_replacement_is_atomic_and_leaves_nothing_behind(tmp_path: Path) -> None:
    _save(tmp_path / "ckpt", 1.0)
    _save(tmp_path / "ckpt", 2.0)
    assert load_checkpoint(tmp_path / "ckpt").tensors("model")["w"][0, 0] == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    _save(tmp_path / "ckpt", 1.0)
    with pytest.raises(AttributeError):
        save_checkpoint(tmp_path / "ckpt", {"kind": "test"}, {"model": {"w": "not a tensor"}})
    assert load_checkpoint(tmp_path / "ckpt").config["value"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_files_get_the_usual_permissions(tmp_path: Path) -> None:
    path = _save(tmp_path / "ckpt")
    mask = os.umask(0)
    os.umask(mask)
    for file in path.iterdir():
        assert file.stat().st_mode & 0o777 == 0o666 & ~mask


def test_refuses_to_replace_a_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scan.nii.gz").write_text("x")
    with pytest.raises(TsscError, match="not a checkpoint folder"):
        _save(tmp_path / "data")
    assert (tmp_path / "data" / "scan.nii.gz").exists()


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(TsscError, match="no such checkpoint folder"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TsscError, match=r"config\.json: missing"):
        load_checkpoint(tmp_path / "empty")
    path = _save(tmp_path / "ckpt")
    with pytest.raises(TsscError, match="is a 'test' checkpoint, expected a 'stage1' one"):
        load_checkpoint(path, "stage1")
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(TsscError, match="cannot read tensors"):
        load_checkpoint(path).tensors("model")
    with pytest.raises(TsscError, match=r"has no ema\.safetensors"):
        load_checkpoint(path).tensors("ema")
    (path / "config.json").write_text("{not json")
    with pytest.raises(TsscError, match="not valid JSON"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_say_what(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c", {"kind": "t"}, {"model": nn.Linear(3, 4).state_dict()})
    with pytest.raises(TsscError, match=r"model weights do not fit .*size mismatch for weight"):
        load_checkpoint(path).load_into(nn.Linear(3, 5), "model")
    message = "does not describe a model this version can build"
    with pytest.raises(TsscError, match=message), load_checkpoint(path).building():
        nn.Linear("x", 4)  # type: ignore[arg-type]


def test_optimizer_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    tensors, meta = optimizer_state(opt)
    path = save_checkpoint(tmp_path / "c", {"kind": "t"}, {"training": tensors}, {"opt": meta})
    ckpt = load_checkpoint(path)
    fresh = torch.optim.AdamW(net.parameters(), lr=0.5)
    load_optimizer_state(fresh, ckpt.tensors("training"), json.loads(json.dumps(ckpt.json("opt"))))
    before, after = opt.state_dict(), fresh.state_dict()
    assert after["param_groups"][0]["lr"] == 0.01
    for index, entry in before["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(after["state"][index][key]), torch.as_tensor(value))


def _killed_during_the_first_save(out: Path) -> Path:
    """Run a first checkpoint save into ``out`` that is killed (SIGKILL) half-way; return
    the temporary folder it left."""
    code = (
        "import os, signal, sys, torch\n"
        "from pathlib import Path\n"
        "import tssc_py.checkpoint as c\n"
        "def die(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "c.save_file = die\n"
        "c.save_checkpoint(Path(sys.argv[1]), {'kind': 'test'}, {'model': {'w': torch.ones(2)}})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out / "checkpoint")], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    (left,) = out.glob(".checkpoint.tssc-*.tmp")
    return left


def test_what_a_killed_first_save_left_is_removed_by_the_next(tmp_path: Path) -> None:
    left = _killed_during_the_first_save(tmp_path)
    _save(tmp_path / "checkpoint")
    assert not left.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    # A training started again in the folder removes it before its first save.
    left = _killed_during_the_first_save(tmp_path / "run")
    Run(tmp_path / "run", "test", ["step"], overwrite=True)
    assert not left.exists()


class _Payload:
    """Unpickled, it would create the file ``marker``: code run from a data file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return Path.touch, (str(self.marker),)  # type: ignore[return-value]


def test_no_code_from_a_checkpoint_ever_runs(tmp_path: Path, checkpoint: Path) -> None:
    # A checkpoint whose weights file is a pickle (what torch.save writes), with a torch.save
    # file beside it: loading the checkpoint refuses the one and ignores the other.
    model = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, model)
    marker = tmp_path / "code-ran"
    for name in ("ema.safetensors", "model.pt"):
        (model / name).write_bytes(pickle.dumps(_Payload(marker)))
    torch.save({"payload": _Payload(marker)}, model / "ema.pt")
    chunk = tmp_path / "c.npz"
    np.savez(chunk, stack=np.zeros((1, 6, 16, 16), np.float32), header=np.array("{}"))
    proc = run_cli(
        "tssc-interpolate", "--chunk", chunk, "--method", "diffusion", "--checkpoint", model,
        "--out", tmp_path / "o.npz", check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "ema.safetensors: cannot read tensors")
    assert not marker.exists()


def test_a_full_disk_during_a_training_save_is_one_line(prepared: Path, tmp_path: Path) -> None:
    from tests.test_atomic import _file_size_limit

    out = tmp_path / "run"
    args = ["--data", prepared, "--out", out, "--preset", "DiT_tiny", "--frames", "6"]
    args += ["--batch-size", "1", "--steps", "1", "--val-every", "0", "--no-progress"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "bin/tssc-train-stage1"), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=_file_size_limit(50_000),  # a file size limit fails writes as a full disk
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # The last step's validation line, then the error alone.
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1] == f"Error: {out / 'checkpoint'}: cannot write the checkpoint: " + (
        "Error while serializing: I/O error: File too large (os error 27)"
    )
    assert not any(p.name.startswith(".checkpoint") for p in out.iterdir())
