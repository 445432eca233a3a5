"""Stage-2 data, training, resume and refinement (tiny networks, tiny volumes)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import make_prepared, run_cli
from tssc_py.checkpoint import load_checkpoint
from tssc_py.device import resolve_device
from tssc_py.errors import TsscError
from tssc_py.io import read_scan, write_scan
from tssc_py.methods import fill_chunk, get_method
from tssc_py.prepare import PrepareConfig, load_record, prepare_file, record_path
from tssc_py.slices import assemble_chunks, filled_scan, split_volume
from tssc_py.stage2.data import (
    CropSampler,
    OutputsFolder,
    Pair,
    load_pairs,
    outputs_folder,
)
from tssc_py.stage2.model import build_refine
from tssc_py.stage2.refine import (
    context_channels,
    load_refiner,
    refine_file,
    refine_series,
    refine_volume,
)
from tssc_py.stage2.ssm import resolve_backend
from tssc_py.stage2.train import LOG_COLUMNS, TrainConfig, train


def _linear_outputs(prepared: Path, folder: Path) -> Path:
    """Stand-in stage-1 outputs: the linear method's filled series of every subject."""
    for image in sorted(prepared.glob("*.nii.gz")):
        record = load_record(record_path(image))
        volume = read_scan(image).data
        chunks = split_volume(volume, record, volume.shape[2])
        filled = assemble_chunks([fill_chunk(c, get_method("linear")) for c in chunks])
        write_scan(filled_scan(filled, record), folder / f"{record.subject}.nii")
    return folder


def _config(**changes: object) -> TrainConfig:
    base = {
        "preset": "tiny",  # auto would train base where the suite runs on a GPU
        "steps": 4,
        "batch_size": 2,
        "crop": 8,
        "val_every": 2,
        "checkpoint_every": 2,
    }
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def outputs(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _linear_outputs(prepared, tmp_path_factory.mktemp("stage1_outputs"))


def test_pairs_and_crops(prepared: Path, outputs: Path) -> None:
    images = sorted(prepared.glob("*.nii.gz"))
    pairs = load_pairs(images, outputs_folder(outputs, ["s0", "s1", "s2"]))
    assert [p.subject for p in pairs] == ["s0", "s1", "s2"]
    assert pairs[0].generated.shape == (6, 16, 16, 4)  # the 6 hidden frames of 8
    x, y = CropSampler(pairs, 8, 4).batch(np.random.default_rng(0), 5)
    assert x.shape == y.shape == (5, 1, 8, 8, 4)
    with pytest.raises(TsscError, match="no stage-1 output for subject 's9'"):
        outputs_folder(outputs, ["s9"])


def test_upsample_subjects_are_refused(tmp_path: Path) -> None:
    from tests.conftest import blob_series, write_nifti

    scan = write_nifti(tmp_path / "u.nii.gz", blob_series((20, 18, 4, 4)))
    image, _ = prepare_file(
        scan, tmp_path / "p" / "u.nii.gz", PrepareConfig(mode="upsample", size=16, depth=4)
    )
    with pytest.raises(TsscError, match="upsample-mode subject"):
        load_pairs([image], {"u": image})


def test_train_writes_log_and_checkpoint(prepared: Path, outputs: Path, tmp_path: Path) -> None:
    whole = train(
        [prepared],
        tmp_path / "whole",
        _config(),
        stage1=OutputsFolder(outputs),
        show_progress=False,
    )
    ckpt = load_checkpoint(whole, "stage2")
    assert ckpt.config["step"] == 4 and ckpt.config["refine"]["channels"] == 8
    with (tmp_path / "whole" / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(LOG_COLUMNS) and [r["step"] for r in rows] == ["2", "4"]
    assert float(rows[-1]["val_psnr"]) > 10 and float(rows[-1]["wavelet"]) > 0


def test_killed_run_resumes_exactly(
    prepared: Path, outputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the CPU: CUDA's atomically-adding kernels already make two identical GPU runs differ.
    cpu = _config(device="cpu")
    whole = train(
        [prepared], tmp_path / "whole", cpu, stage1=OutputsFolder(outputs), show_progress=False
    )
    calls = {"n": 0}
    batch = CropSampler.batch

    def dies_at_step_3(self, rng, size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return batch(self, rng, size)

    monkeypatch.setattr(CropSampler, "batch", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(
            [prepared], tmp_path / "part", cpu, stage1=OutputsFolder(outputs), show_progress=False
        )
    monkeypatch.setattr(CropSampler, "batch", batch)
    assert load_checkpoint(tmp_path / "part" / "checkpoint").config["step"] == 2
    resumed = train(
        [prepared],
        tmp_path / "part",
        cpu,
        stage1=OutputsFolder(outputs),
        resume=True,
        show_progress=False,
    )
    for name in ("model", "training"):
        a, b = load_checkpoint(whole).tensors(name), load_checkpoint(resumed).tensors(name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_refine_identity_tiles_padding_and_known_frames() -> None:
    torch.manual_seed(0)
    net = build_refine("tiny").eval()
    vol = np.random.default_rng(0).random((18, 13, 3)).astype(np.float32)
    np.testing.assert_allclose(refine_volume(net, vol), vol, atol=1e-6)
    np.testing.assert_allclose(refine_volume(net, vol, tile=8, overlap=4), vol, atol=1e-6)
    with torch.no_grad():
        net.head.weight.normal_(std=0.05)
    series = np.random.default_rng(1).random((16, 16, 3, 4)).astype(np.float32)
    out = refine_series(net, series, [0, 3])
    np.testing.assert_array_equal(out[..., [0, 3]], series[..., [0, 3]])
    assert not np.allclose(out[..., 1], series[..., 1])
    with pytest.raises(TsscError, match="positive multiple of 4"):
        refine_volume(net, vol, tile=6)
    with torch.no_grad():
        net.head.bias.fill_(float("nan"))  # a diverged training
    with pytest.raises(TsscError, match="stage 2 returned NaN or infinite values for frame 1"):
        refine_series(net, series, [0, 3])


def test_context_channels_take_the_nearest_known_frames() -> None:
    series = np.broadcast_to(np.arange(8, dtype=np.float32), (4, 4, 2, 8)).copy()  # value = t
    known = [2, 5]

    def summary(t: int) -> list[float]:
        context = context_channels(series, known, t)
        assert context.shape == (3, 4, 4, 2) and context.dtype == np.float32
        assert all(np.ptp(c) == 0 for c in context)  # each channel is one value everywhere
        return [float(c.flat[0]) for c in context]

    assert summary(3) == pytest.approx([2, 5, 1 / 3])
    assert summary(5) == [5, 5, 0]  # a known frame is its own context
    assert summary(0) == [2, 2, 0]  # before the first known frame: the first, twice
    assert summary(7) == [5, 5, 0]
    with pytest.raises(TsscError, match="without known frames"):
        context_channels(series, [], 3)


def test_context_network_refuses_the_other_input() -> None:
    torch.manual_seed(0)
    vol = np.random.default_rng(0).random((18, 13, 3)).astype(np.float32)
    series = np.stack([vol] * 4, axis=-1)
    context = context_channels(series, [0, 3], 1)
    with_context = build_refine("tiny", context=True).eval()
    assert with_context.stem[0].in_channels == 4
    # Untrained it is the identity, as without context: training starts from stage 1's frames.
    refined = refine_volume(with_context, vol, tile=8, overlap=4, context=context)
    np.testing.assert_allclose(refined, vol, atol=1e-6)
    with pytest.raises(TsscError, match="needs the known frames' context"):
        refine_volume(with_context, vol)
    with pytest.raises(TsscError, match="was trained without the known frames' context"):
        refine_volume(build_refine("tiny").eval(), vol, context=context)
    with pytest.raises(TsscError, match=r"expected \(B, 4, X, Y, Z\) inputs"):
        with_context(torch.zeros(1, 1, 16, 16, 3))


def test_crops_carry_the_context_with_their_frame() -> None:
    rng = np.random.default_rng(0)
    made = rng.random((2, 16, 12, 3)).astype(np.float32)
    truth = made + 1
    # Context channels equal to the frame (plus 2, 3, 4) show that crops and flips match.
    context = np.stack([made + k for k in (2, 3, 4)], axis=1)
    x, y = CropSampler([Pair("s", made, truth, context)], 8, 4).batch(rng, 16)
    assert x.shape == (16, 4, 8, 8, 3) and y.shape == (16, 1, 8, 8, 3)
    for k in range(4):
        np.testing.assert_allclose(x[:, k] - x[:, 0], 0 if k == 0 else k + 1, atol=1e-6)
    np.testing.assert_allclose(y[:, 0] - x[:, 0], 1, atol=1e-6)


def test_train_and_refine_with_context(
    prepared: Path, outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = train(
        [prepared],
        tmp_path / "run",
        _config(steps=2, context=True),
        stage1=OutputsFolder(outputs),
        show_progress=False,
    )
    err = capsys.readouterr().err
    # 2 training subjects and 1 validation subject here; both given, each a PSNR.
    assert re.search(
        r"stage-1 frames: PSNR \d+\.\d\d dB on the training subjects, "
        r"\d+\.\d\d on the validation subjects",
        err,
    )
    assert load_checkpoint(ckpt).config["refine"]["context"] is True
    net = load_refiner(ckpt, "cpu").net
    assert net.config.context
    with torch.no_grad():
        net.head.weight.normal_(std=0.05)
    filled = read_scan(outputs / "s0.nii").data
    known = load_record(prepared / "s0.json").known_frames
    out = refine_series(net, filled, known)
    np.testing.assert_array_equal(out[..., known], filled[..., known])
    hidden = [t for t in range(filled.shape[-1]) if t not in known]
    assert not np.allclose(out[..., hidden], filled[..., hidden])
    refine_file(outputs / "s0.nii", prepared / "s0.json", ckpt, tmp_path / "refined.nii")
    assert read_scan(tmp_path / "refined.nii").data.shape == filled.shape


def test_refine_cli(prepared: Path, outputs: Path, tmp_path: Path) -> None:
    ckpt = train(
        [prepared],
        tmp_path / "run",
        _config(steps=2),
        stage1=OutputsFolder(outputs),
        show_progress=False,
    )
    assert isinstance(load_refiner(ckpt, "cpu").net, torch.nn.Module)
    out = tmp_path / "refined.nii"
    proc = run_cli(
        "tssc-refine",
        "--filled",
        outputs / "s0.nii",
        "--record",
        prepared / "s0.json",
        "--checkpoint",
        ckpt,
        "--out",
        out,
        "--tile",
        8,
    )
    backend = resolve_backend("auto", resolve_device("auto"))  # mamba_ssm on a GPU with it
    assert f"state-space backend: {backend}" in proc.stdout
    refined, filled = read_scan(out).data, read_scan(outputs / "s0.nii").data
    np.testing.assert_array_equal(refined[..., [0, 7]], filled[..., [0, 7]])
    # A series that is not the record's (here a slice short) is refused before any work.
    thin = write_scan(
        read_scan(outputs / "s0.nii").replace(data=filled[:, :, :3]), tmp_path / "t.nii"
    )
    with pytest.raises(TsscError, match=r"t\.nii: has shape .* the record expects"):
        refine_file(thin, prepared / "s0.json", ckpt, tmp_path / "t_refined.nii")
    proc = run_cli(
        "tssc-refine",
        "--filled",
        outputs / "s0.nii",
        "--record",
        prepared / "s0.json",
        "--checkpoint",
        tmp_path,
        "--out",
        tmp_path / "x.nii",
        check=False,
    )
    assert proc.returncode == 1 and "config.json: missing" in proc.stderr


def test_sizes_in_a_hand_edited_config_are_refused_before_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tssc_py.checkpoint import save_checkpoint

    net = build_refine("tiny")
    config = {"kind": "stage2", "refine": net.config.to_dict()}
    ckpt = save_checkpoint(tmp_path / "ckpt", config, {"model": net.state_dict()})
    edited = {**config, "refine": {**config["refine"], "channels": 10**9}}
    (ckpt / "config.json").write_text(json.dumps(edited))
    with pytest.raises(TsscError, match=r"ckpt/config\.json: stage-2 channels must be an integer"):
        load_refiner(ckpt, "cpu")
    (ckpt / "config.json").write_text(json.dumps(config))
    assert isinstance(load_refiner(ckpt, "cpu").net, torch.nn.Module)
    monkeypatch.setattr("tssc_py.memory.physical_memory", lambda: 10**4)
    message = (
        r"ckpt/config\.json: the network it describes \(0\.\d M parameters, 2 copies of their "
        r"float32 weights: built, then loaded\) needs about"
    )
    with pytest.raises(TsscError, match=message):
        load_refiner(ckpt, "cpu")


def test_network_and_batch_sizes_have_bounds(
    prepared: Path, outputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TsscError, match=r"^channels must be an integer from 1 to 512, got 1000$"):
        _config(channels=1000)
    with pytest.raises(TsscError, match=r"^batch_size must be an integer from 1 to 4096, got"):
        _config(batch_size=10**9)
    monkeypatch.setattr("tssc_py.memory.physical_memory", lambda: 10**4)
    message = (
        r"^the network of --preset tiny, --blocks 2 \(0\.\d M parameters, 4 copies of their "
        r"float32 weights: the weights, their gradients and Adam's two moments\) needs about"
    )
    with pytest.raises(TsscError, match=message):
        train(
            [prepared], tmp_path / "run", _config(blocks=2), stage1=OutputsFolder(outputs),
            show_progress=False,
        )  # fmt: skip


def test_inputs_crops_and_the_backend_line(
    prepared: Path, outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same subject twice: its stage-1 output is found by subject, so the second image
    # would have trained against the first's.
    twin = tmp_path / "twin"
    twin.mkdir()
    for name in ("s0.nii.gz", "s0.json"):
        (twin / name).write_bytes((prepared / name).read_bytes())
    with pytest.raises(TsscError, match=r"subject 's0' comes twice, also from"):
        train(
            [prepared, twin / "s0.nii.gz"], tmp_path / "a", _config(), stage1=OutputsFolder(outputs)
        )
    with pytest.raises(TsscError, match="resume and overwrite exclude each other"):
        train(
            [prepared],
            tmp_path / "c",
            _config(),
            stage1=OutputsFolder(outputs),
            resume=True,
            overwrite=True,
        )
    # The crop is checked against the network it trains, before any stage-1 output is read:
    # base halves the in-plane size 3 times (a crop of 36 once failed in the network's forward).
    for crop, preset in ((6, "tiny"), (36, "base"), (2, "tiny")):
        multiple = 4 if preset == "tiny" else 8
        with pytest.raises(TsscError, match=f"--crop must be a multiple of {multiple} for the "):
            train(
                [prepared],
                tmp_path / "x",
                _config(crop=crop, preset=preset),
                OutputsFolder(outputs),
            )
    with pytest.raises(TsscError, match="crop must be at least 1, got 0"):
        _config(crop=0)
    # A crop beyond the frames is cut to their side rounded down to the network's multiple
    # (30x30 frames failed at the first step: the network halves the side twice; 60-voxel
    # frames failed base, which halves it 3 times).
    frames = np.zeros((2, 30, 30, 4), np.float32)
    sampler = CropSampler([Pair("s", frames, frames)], 64, 4)
    x, _ = sampler.batch(np.random.default_rng(0), 2)
    assert x.shape == (2, 1, 28, 28, 4) and sampler.crop_shapes() == {(28, 28, 4)}
    wide = np.zeros((2, 60, 60, 4), np.float32)
    assert CropSampler([Pair("s", wide, wide)], 64, 8).crop_shapes() == {(56, 56, 4)}
    with pytest.raises(TsscError, match="frames under 4 voxels in-plane"):
        CropSampler([Pair("s", frames[:, :3], frames[:, :3])], 8, 4)
    config = _config(crop=64, preset="auto", device="cpu")
    train([prepared], tmp_path / "b", config, stage1=OutputsFolder(outputs), show_progress=False)
    err = capsys.readouterr().err
    assert "stage 2 state-space backend: torch" in err
    assert "stage 2 preset: tiny (--preset auto on cpu)" in err
    assert load_checkpoint(tmp_path / "b" / "checkpoint").config["train"]["preset"] == "tiny"
    # The 4 slices allow 2 haar levels of the default 3: said, not silently lowered.
    assert (
        "wavelet levels: 2 of the 3 asked for (--level), as many as haar allows on training "
        "crops of 16x16x4 voxels"
    ) in err


def test_tssc_run_with_stage2(
    prepared: Path, outputs: Path, checkpoint: Path, tmp_path: Path
) -> None:
    refine = train(
        [prepared],
        tmp_path / "s2",
        _config(steps=2),
        stage1=OutputsFolder(outputs),
        show_progress=False,
    )
    scans = prepared.parent / "scans"
    common = ("--size", 16, "--depth", 4, "--frames", 6, "--no-progress")
    run_cli(
        "tssc-run",
        "--input",
        scans / "s0.nii.gz",
        "--out",
        tmp_path / "run",
        "--methods",
        "linear,diffusion",
        "--checkpoint",
        checkpoint,
        "--steps",
        2,
        "--refine-checkpoint",
        refine,
        "--tile",
        8,
        "--ssim",
        "2d",
        *common,
    )
    summary = pd.read_csv(tmp_path / "run" / "report" / "summary.csv")
    assert set(summary["method"]) == {"linear", "diffusion", "tssc"}
    assert (tmp_path / "run" / "tssc" / "s0.nii.gz").exists()
    run_cli(
        "tssc-run",
        "--input",
        scans / "s0.nii.gz",
        "--out",
        tmp_path / "ablation",
        "--methods",
        "diffusion",
        "--checkpoint",
        checkpoint,
        "--steps",
        2,
        "--refine-checkpoint",
        refine,
        "--no-refine",
        "--ssim",
        "2d",
        *common,
    )
    summary = pd.read_csv(tmp_path / "ablation" / "report" / "summary.csv")
    assert set(summary["method"]) == {"diffusion"}
    # Stage 2 over another method: a method of its own, named after it, recorded as such.
    run_cli(
        "tssc-run",
        "--input",
        scans / "s0.nii.gz",
        "--out",
        tmp_path / "over_linear",
        "--methods",
        "linear",
        "--refine-checkpoint",
        refine,
        "--refine-method",
        "linear",
        "--ssim",
        "2d",
        *common,
    )
    summary = pd.read_csv(tmp_path / "over_linear" / "report" / "summary.csv")
    assert set(summary["method"]) == {"linear", "linear_sc"}
    assert (tmp_path / "over_linear" / "linear_sc" / "s0.nii.gz").exists()
    state = json.loads((tmp_path / "over_linear" / "run.json").read_text())
    assert state["settings"]["refine"]["method"] == "linear"
    proc = run_cli(
        "tssc-run",
        "--input",
        scans / "s0.nii.gz",
        "--out",
        tmp_path / "bad",
        "--methods",
        "linear",
        "--refine-checkpoint",
        refine,
        *common,
        check=False,
    )
    assert proc.returncode == 1 and "add it to methods" in proc.stderr


def test_train_needs_a_subject_to_train_on(tmp_path: Path) -> None:
    others = make_prepared(tmp_path / "o", subjects=1)
    with pytest.raises(TsscError, match="leave none for training"):
        train(
            [others],
            tmp_path / "r",
            _config(),
            stage1=OutputsFolder(_linear_outputs(others, tmp_path / "lin")),
        )
