"""Stage-2 data, training, resume and refinement (tiny networks, tiny volumes)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import make_prepared, run_cli, tiny_train_config
from tssc_py.checkpoint import load_checkpoint
from tssc_py.device import resolve_device
from tssc_py.errors import TsscError
from tssc_py.io import read_scan, write_scan
from tssc_py.methods import fill_chunk, get_method
from tssc_py.methods.diffusion import SAMPLING_REVISION
from tssc_py.prepare import PrepareConfig, load_record, prepare_file, record_path
from tssc_py.slices import assemble_chunks, filled_scan, split_volume
from tssc_py.stage1.train import train as train_stage1
from tssc_py.stage2.data import (
    CropSampler,
    Pair,
    generate_stage1,
    load_pairs,
    outputs_folder,
)
from tssc_py.stage2.model import build_refine
from tssc_py.stage2.refine import load_refine, refine_file, refine_series, refine_volume
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
    x, y = CropSampler(pairs, 8).batch(np.random.default_rng(0), 5)
    assert x.shape == y.shape == (5, 1, 8, 8, 4)
    with pytest.raises(TsscError, match="no stage-1 output for subject 's9'"):
        outputs_folder(outputs, ["s9"])


def test_generate_stage1_caches(prepared: Path, tmp_path: Path) -> None:
    ckpt = train_stage1(
        [prepared], tmp_path / "s1", tiny_train_config(frames=8, steps=1), show_progress=False
    )
    images = sorted(prepared.glob("*.nii.gz"))

    def made_at(options: dict[str, object]) -> int:
        runner = get_method("diffusion", checkpoint=ckpt, **options)
        made = generate_stage1(images, tmp_path / "cache", runner)
        assert sorted(made) == ["s0", "s1", "s2"]
        return made["s0"].stat().st_mtime_ns

    first = made_at({"steps": 2})
    assert made_at({"steps": 2, "batch_size": None}) == first  # None: the same default
    remade = made_at({"steps": 3})  # other sampling options: made again
    assert remade != first
    assert made_at({"steps": 3, "flips": 8}) == remade  # 8 is the default
    assert made_at({"steps": 3, "flips": 1}) != remade
    settings = json.loads((tmp_path / "cache" / "made_with.json").read_text())
    assert settings["flips"] == 1 and settings["checkpoint"]["step"] == 1
    assert len(settings["weights_sha256"]) == 64 and settings["sampling"] == SAMPLING_REVISION
    # Other weights under the same config (stage 1 retrained, or by other code): made again.
    # The demo's stage 2 once trained on outputs cached before the sampling noise changed.
    weights = ckpt / "ema.safetensors"
    save_file({k: v + 0.01 for k, v in load_file(str(weights)).items()}, str(weights))
    assert made_at({"steps": 3, "flips": 1}) != remade
    # A subject prepared again (here with every third frame known): made again, the others
    # reused. A resumed stage-2 training (once) kept the first pattern's outputs.
    shutil.copytree(prepared, tmp_path / "prepared")
    images = sorted((tmp_path / "prepared").glob("*.nii.gz"))
    runner = get_method("diffusion", checkpoint=ckpt, flips=1)
    made = generate_stage1(images, tmp_path / "cache2", runner)
    times = {subject: path.stat().st_mtime_ns for subject, path in made.items()}
    scan = prepared.parent / "scans" / "s0.nii.gz"
    config = PrepareConfig(size=16, depth=4, frames=7, known_every=3)
    prepare_file(scan, images[0], config, overwrite=True)
    made = generate_stage1(images, tmp_path / "cache2", runner)
    assert made["s0"].stat().st_mtime_ns != times["s0"]
    assert [made[s].stat().st_mtime_ns for s in ("s1", "s2")] == [times["s1"], times["s2"]]
    assert read_scan(made["s0"]).data.shape[-1] == 7


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
        [prepared], tmp_path / "whole", _config(), stage1_outputs=outputs, show_progress=False
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
    whole = train([prepared], tmp_path / "whole", cpu, stage1_outputs=outputs, show_progress=False)
    calls = {"n": 0}
    batch = CropSampler.batch

    def dies_at_step_3(self, rng, size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return batch(self, rng, size)

    monkeypatch.setattr(CropSampler, "batch", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train([prepared], tmp_path / "part", cpu, stage1_outputs=outputs, show_progress=False)
    monkeypatch.setattr(CropSampler, "batch", batch)
    assert load_checkpoint(tmp_path / "part" / "checkpoint").config["step"] == 2
    resumed = train(
        [prepared],
        tmp_path / "part",
        cpu,
        stage1_outputs=outputs,
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


def test_refine_cli(prepared: Path, outputs: Path, tmp_path: Path) -> None:
    ckpt = train(
        [prepared], tmp_path / "run", _config(steps=2), stage1_outputs=outputs, show_progress=False
    )
    assert isinstance(load_refine(ckpt), torch.nn.Module)
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
        load_refine(ckpt)
    (ckpt / "config.json").write_text(json.dumps(config))
    assert isinstance(load_refine(ckpt), torch.nn.Module)
    monkeypatch.setattr("tssc_py.memory.physical_memory", lambda: 10**4)
    message = (
        r"ckpt/config\.json: the network it describes \(0\.\d M parameters, 2 copies of their "
        r"float32 weights: built, then loaded\) needs about"
    )
    with pytest.raises(TsscError, match=message):
        load_refine(ckpt)


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
            [prepared], tmp_path / "run", _config(blocks=2), stage1_outputs=outputs,
            show_progress=False,
        )  # fmt: skip


def test_resume_refuses_other_stage1_outputs(prepared: Path, tmp_path: Path) -> None:
    models = [
        train_stage1(
            [prepared],
            tmp_path / f"s1_{steps}",
            tiny_train_config(frames=8, steps=steps),
            show_progress=False,
        )
        for steps in (1, 2)
    ]
    run = tmp_path / "run"
    train([prepared], run, _config(steps=2), stage1=models[0], show_progress=False)
    made = sorted((run / "stage1_outputs").glob("*.nii"))
    with pytest.raises(TsscError, match=r"other stage-1 outputs \(checkpoint.step, "):
        train([prepared], run, _config(steps=3), stage1=models[1], resume=True)
    with pytest.raises(TsscError, match=r"other stage-1 outputs \(steps differs\)"):
        train(
            [prepared],
            run,
            _config(steps=3),
            stage1=models[0],
            stage1_options={"steps": 2},
            resume=True,
        )
    with pytest.raises(TsscError, match="other stage-1 outputs"):
        train([prepared], run, _config(steps=3), stage1_outputs=run / "lin", resume=True)
    assert sorted((run / "stage1_outputs").glob("*.nii")) == made  # not made again
    train([prepared], run, _config(steps=3), stage1=models[0], resume=True, show_progress=False)
    # The batch size is not compared, also where an earlier tssc recorded it.
    config_file = run / "checkpoint" / "config.json"
    config = json.loads(config_file.read_text())
    assert "batch_size" not in config["stage1"]
    config["stage1"]["batch_size"] = 16
    config_file.write_text(json.dumps(config))
    options = {"batch_size": 2}
    train([prepared], run, _config(steps=3), stage1=models[0], stage1_options=options, resume=True)
    # Stage 1 retrained in place with the same options: other weights, other outputs.
    weights = models[0] / "ema.safetensors"
    save_file({k: v + 0.01 for k, v in load_file(str(weights)).items()}, str(weights))
    with pytest.raises(TsscError, match=r"other stage-1 outputs \(weights_sha256 differs\)"):
        train([prepared], run, _config(steps=4), stage1=models[0], resume=True)
    # Outputs read from a folder that tssc-train-stage2 made are known by how they were made.
    other = tmp_path / "other"
    train([prepared], other, _config(steps=2), stage1_outputs=run / "stage1_outputs")
    saved = load_checkpoint(other / "checkpoint").config["stage1"]
    assert saved["made_with"]["checkpoint"]["step"] == 1


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
        train([prepared, twin / "s0.nii.gz"], tmp_path / "a", _config(), stage1_outputs=outputs)
    with pytest.raises(TsscError, match="resume and overwrite exclude each other"):
        train(
            [prepared],
            tmp_path / "c",
            _config(),
            stage1_outputs=outputs,
            resume=True,
            overwrite=True,
        )
    for crop in (6, 2):
        with pytest.raises(TsscError, match="crop must be a positive multiple of 4"):
            _config(crop=crop)
    # A crop beyond the frames is cut to their side rounded down to a multiple of 4 (30x30
    # frames failed at the first step: the network halves the side twice).
    frames = np.zeros((2, 30, 30, 4), np.float32)
    sampler = CropSampler([Pair("s", frames, frames)], 64)
    x, _ = sampler.batch(np.random.default_rng(0), 2)
    assert x.shape == (2, 1, 28, 28, 4) and sampler.crop_shapes() == {(28, 28, 4)}
    with pytest.raises(TsscError, match="frames under 4 voxels in-plane"):
        CropSampler([Pair("s", frames[:, :3], frames[:, :3])], 8)
    config = _config(crop=64, preset="auto", device="cpu")
    train([prepared], tmp_path / "b", config, stage1_outputs=outputs, show_progress=False)
    err = capsys.readouterr().err
    assert "stage 2 state-space backend: torch" in err
    assert "stage 2 preset: tiny (--preset auto on cpu)" in err
    assert load_checkpoint(tmp_path / "b" / "checkpoint").config["train"]["preset"] == "tiny"
    # The 4 slices allow 2 haar levels of the default 3: said, not silently lowered.
    assert (
        "wavelet levels: 2 of the 3 asked for (--level), as many as haar allows on training "
        "crops of 16x16x4 voxels"
    ) in err


def test_train_needs_exactly_one_stage1_source(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(TsscError, match="either a stage-1 checkpoint or a folder"):
        train([prepared], tmp_path / "r", _config())
    others = make_prepared(tmp_path / "o", subjects=1)
    with pytest.raises(TsscError, match="leave none for training"):
        train(
            [others],
            tmp_path / "r",
            _config(),
            stage1_outputs=_linear_outputs(others, tmp_path / "lin"),
        )


def test_tssc_run_with_stage2(
    prepared: Path, outputs: Path, checkpoint: Path, tmp_path: Path
) -> None:
    refine = train(
        [prepared], tmp_path / "s2", _config(steps=2), stage1_outputs=outputs, show_progress=False
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
