"""SIGTERM and Ctrl-C: deferred in training loops, held between the renames of a checkpoint
swap, and turned into one error line and exit status 143 / 130 by the commands, with nothing
half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import BIN, REPO, tiny_train_config
from tssc_py import signals, training
from tssc_py.checkpoint import load_checkpoint
from tssc_py.cli import command
from tssc_py.signals import Terminated, deferred_stop, raise_on_sigterm, signals_held
from tssc_py.stage1.train import train as train_stage1
from tssc_py.training import Run

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers can only be set in the main thread",
)


@pytest.fixture
def recorded() -> list[int]:
    """SIGTERM records itself here for the test's duration."""
    got: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    yield got
    signal.signal(signal.SIGTERM, previous)
    signals._received.clear()  # what raise_on_sigterm's handler noted


def test_deferred_stop_names_the_signal_and_passes_an_unhandled_one_on(
    recorded: list[int],
) -> None:
    with deferred_stop() as requested:
        assert requested() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert requested() == signal.SIGTERM and not recorded
    assert recorded == [signal.SIGTERM]  # the block did not act on it: delivered again
    recorded.clear()
    with pytest.raises(Terminated), deferred_stop() as requested:
        os.kill(os.getpid(), signal.SIGTERM)
        if requested():
            raise Terminated
    assert not recorded  # acted on: not delivered again


def test_deferred_stop_waits_for_one_ctrl_c_not_for_two() -> None:
    with pytest.raises(Terminated), deferred_stop() as requested:
        os.kill(os.getpid(), signal.SIGINT)
        assert requested() == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)
        assert requested() == signal.SIGINT  # the first that came
        raise Terminated
    waited = False
    with pytest.raises(KeyboardInterrupt), deferred_stop() as requested:
        os.kill(os.getpid(), signal.SIGINT)
        assert requested() == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
        waited = True
    assert not waited  # the second stopped the block at once
    # The checkpoint swap holds every Ctrl-C, however many, until it is done.
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            waited = True
        time.sleep(1)
    assert waited


def test_an_ignored_ctrl_c_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a job started with &
    try:
        with deferred_stop() as requested:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert requested() is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_training_save_writes_checkpoint_and_log_before_a_signal_acts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path / "run", "test", ["step", "loss"])
    run.log({"step": 1, "loss": 0.5})
    real = training.save_checkpoint

    def interrupted(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C while the checkpoint is written
        time.sleep(0.05)
        real(*args, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", interrupted)
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(KeyboardInterrupt):
        run.save({}, {"model": net}, optimizer, torch.Generator(), np.random.default_rng(0), 1)
    assert load_checkpoint(run.checkpoint).config["step"] == 1
    assert run.log_path.read_text().splitlines() == ["step,loss", "1,0.5"]


def test_ctrl_c_is_one_error_line_and_status_130(capsys: pytest.CaptureFixture[str]) -> None:
    @command
    def interrupted() -> None:
        """A command the user stops."""
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as done:
        interrupted.main([], prog_name="tssc-x")
    assert done.value.code == 130
    assert capsys.readouterr().err.strip() == "Error: interrupted by Ctrl-C"


def test_signals_held_delivers_after_the_block(recorded: list[int]) -> None:
    with signals_held():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert not recorded
    assert recorded == [signal.SIGTERM]


def test_raise_on_sigterm(recorded: list[int]) -> None:
    raise_on_sigterm()
    with pytest.raises(Terminated, match="stopped by SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)


def test_a_swallowed_sigterm_is_still_noted(recorded: list[int]) -> None:
    class Dropped:
        def __del__(self) -> None:  # exceptions raised here are ignored by Python
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)

    raise_on_sigterm()
    Dropped()  # deleted at once: the handler's Terminated is swallowed in __del__
    assert signals.sigterm_received()
    with pytest.raises(Terminated):  # what a long loop calls at its safe points
        signals.stop_if_terminated()


def _train_command(kind: str, prepared: Path, out: Path, stage1: Path) -> list[str]:
    common = ["--data", str(prepared), "--out", str(out), "--steps", "100000"]
    common += ["--checkpoint-every", "1", "--val-every", "0", "--batch-size", "1"]
    common += ["--no-progress", "--device", "cpu"]
    if kind == "stage1":
        return ["tssc-train-stage1", *common, "--preset", "DiT_tiny", "--frames", "6"]
    if kind == "stage2":
        return [
            "tssc-train-stage2",
            *common,
            "--preset",
            "tiny",
            "--crop",
            "16",
            "--stage1",
            str(stage1),
        ]
    return ["tssc-train-baseline", *common, "--model", "voxelmorph", "--frames", "6"]


@pytest.mark.parametrize(
    ("kind", "signum"),
    [
        ("stage1", signal.SIGTERM),
        ("stage2", signal.SIGTERM),
        ("baseline", signal.SIGTERM),
        ("stage1", signal.SIGINT),
    ],
)
def test_a_stop_saves_the_training_step_and_stops_cleanly(
    kind: str, signum: int, prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    stage1 = tmp_path / "stage1"
    if kind == "stage2":  # a window as long as the prepared series
        train_stage1([prepared], stage1, tiny_train_config(steps=1, frames=8), show_progress=False)
    name, *args = _train_command(kind, prepared, out, stage1 / "checkpoint")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, str(BIN / name), *args], stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint" / "config.json").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    # Notes before it (the backend, the wavelet levels) are fine; one error line, the last.
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    said = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}[signum]
    assert errors == lines[-1:] and errors[0].startswith(f"Error: stopped by {said} after "), err
    step = int(lines[-1].split("after step ")[1].split(",")[0])
    assert load_checkpoint(out / "checkpoint").config["step"] == step
    assert (out / "log.csv").read_text().splitlines()[-1].startswith(f"{step},")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
