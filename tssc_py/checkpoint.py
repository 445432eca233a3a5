"""Checkpoints as a folder of safetensors files and JSON, never pickle.

A checkpoint folder holds ``config.json`` (what the model is, how it was trained and on what
data), one ``NAME.safetensors`` per group of tensors (``model``, ``ema``, and for a resumable
training checkpoint ``training``: optimizer moments and random generator states) and, for
training checkpoints, ``training.json`` (step, optimizer hyper-parameters, NumPy generator
state). Nothing in it can execute code when loaded. The folder is replaced atomically: it is
written under a temporary name next to the destination and renamed into place, so a job
killed while saving leaves the previous checkpoint intact (and, stopped by SIGINT or SIGTERM,
no temporary folder; killed otherwise, a temporary folder that the next save, or the next
training in that folder, removes).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tssc_py import __version__
from tssc_py.atomic import remove_leftovers, temporary_name
from tssc_py.errors import TsscError, about
from tssc_py.io import file_sha256
from tssc_py.signals import signals_held

CONFIG = "config.json"


@dataclass
class Checkpoint:
    """A checkpoint folder opened for reading.

    Attributes:
        path: The folder.
        config: Contents of ``config.json``.
    """

    path: Path
    config: dict[str, Any]

    def has(self, name: str) -> bool:
        """Whether the tensor group ``name`` (or ``name``.json) is stored."""
        return (self.path / f"{name}.safetensors").is_file() or (
            self.path / f"{name}.json"
        ).is_file()

    def tensors(self, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Load the tensor group ``name``.

        Raises:
            TsscError: If the file is missing or not a valid safetensors file.
        """
        path = self.path / f"{name}.safetensors"
        if not path.is_file():
            raise TsscError(f"checkpoint has no {path.name}", self.path)
        try:
            return load_file(str(path), device=str(device))
        except (SafetensorError, OSError, ValueError) as exc:
            raise TsscError(f"cannot read tensors: {exc}", path) from None

    def digest(self, name: str) -> str:
        """SHA-256 of the tensor group ``name``'s file: what the config does not tell apart (a
        model retrained with the same options, or by other code, has other weights).

        Raises:
            TsscError: If the file is missing or unreadable.
        """
        return file_sha256(self.path / f"{name}.safetensors")

    def load_into(self, module: nn.Module, name: str) -> None:
        """Load the tensor group ``name`` into ``module``'s weights.

        Raises:
            TsscError: If the group cannot be read or does not fit the module.
        """
        try:
            module.load_state_dict(self.tensors(name))
        except RuntimeError as exc:
            # PyTorch's first line only names the model; the next ones name each problem.
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0]
            if len(detail) > 240:  # a list of missing keys can be thousands of characters
                detail = detail[:240] + "..."
            more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
            raise TsscError(
                f"{name} weights do not fit the model config: {detail}{more}", self.path
            ) from None

    @contextmanager
    def building(self) -> Iterator[None]:
        """Around rebuilding the model from ``config``: what a hand-edited or foreign
        config.json makes the model code raise becomes one error naming the folder."""
        try:
            with about(self.path):
                yield
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TsscError(
                f"{CONFIG} does not describe a model this version can build ({first})", self.path
            ) from None

    def json(self, name: str) -> dict[str, Any]:
        """Load ``name``.json.

        Raises:
            TsscError: If the file is missing or not a JSON object.
        """
        return _read_json(self.path / f"{name}.json")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TsscError("missing", path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TsscError(f"not valid JSON: {exc}", path) from None
    if not isinstance(data, dict):
        raise TsscError("not a JSON object", path)
    return data


def load_checkpoint(path: str | Path, kind: str | None = None) -> Checkpoint:
    """Open a checkpoint folder.

    Args:
        path: The folder (holding ``config.json``).
        kind: Expected ``config["kind"]`` (e.g. ``"stage1"``), checked when given.

    Raises:
        TsscError: If the folder or its config is missing or unreadable, or of another kind.
    """
    path = Path(path)
    if not path.is_dir():
        raise TsscError("no such checkpoint folder", path)
    config = _read_json(path / CONFIG)
    if kind is not None and config.get("kind") != kind:
        raise TsscError(
            f"is a {config.get('kind', 'unknown')!r} checkpoint, expected a {kind!r} one", path
        )
    return Checkpoint(path, config)


def save_checkpoint(
    path: str | Path,
    config: dict[str, Any],
    tensors: dict[str, dict[str, torch.Tensor]],
    extra_json: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write a checkpoint folder, replacing an existing one at ``path`` atomically.

    Args:
        path: Destination folder.
        config: Written to ``config.json`` with the tssc version added.
        tensors: Group name -> tensors, each written to ``NAME.safetensors``.
        extra_json: Group name -> JSON object, each written to ``NAME.json``.

    Returns:
        ``path``.

    Raises:
        TsscError: If ``path`` is not a checkpoint folder, or writing fails (the previous
            checkpoint is then kept).
    """
    path = Path(path)
    if path.exists() and not (path / CONFIG).is_file():
        raise TsscError("exists and is not a checkpoint folder; refusing to replace it", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent, path.name)
    prefix, suffix = temporary_name(path, ".tmp")
    tmp = Path(tempfile.mkdtemp(suffix, prefix, path.parent))
    try:
        for name, group in tensors.items():
            flat = {k: v.detach().to("cpu").contiguous() for k, v in group.items()}
            save_file(flat, str(tmp / f"{name}.safetensors"))
        for name, data in (extra_json or {}).items():
            (tmp / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
        full = {**config, "tssc_version": __version__}
        (tmp / CONFIG).write_text(json.dumps(full, indent=1) + "\n")
        # mkdtemp and safetensors create owner-only modes; give the umask's usual ones.
        mask = _umask()
        for file in tmp.iterdir():
            os.chmod(file, 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        if path.exists():
            prefix, suffix = temporary_name(path, ".old")
            old = Path(tempfile.mkdtemp(suffix, prefix, path.parent))
            # Between these two renames there is no checkpoint at ``path``: no signal may
            # stop the process there.
            with signals_held():
                os.replace(path, old / path.name)
                os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError | SafetensorError):  # a full disk, a quota, a size limit
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise TsscError(f"cannot write the checkpoint: {reason}", path) from None
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def optimizer_state(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors and a JSON-ready remainder."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
