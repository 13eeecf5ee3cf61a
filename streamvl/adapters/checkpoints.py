"""Adapter checkpoints: weights in safetensors, a JSON config beside them (nothing is unpickled).

adapter.safetensors holds the adapter's own state dict (never the frozen backbone's);
adapter.json holds {"format", "adapter", "options", "backbone": {"model", "weights_sha256"}}
plus what the trainer adds (classes, class texts and template, the training report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = "streamvl-adapter/1"


def checkpoint_config_path(path: str | Path) -> Path:
    """The JSON config beside a checkpoint: adapter.safetensors -> adapter.json."""
    return Path(path).with_suffix(".json")


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The JSON config of a checkpoint (adapter name, options, backbone, classes, training report)."""
    cfg_path = checkpoint_config_path(path)
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read adapter checkpoint config {cfg_path}: {exc}") from exc
    if config.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{cfg_path} is not a streamvl adapter checkpoint (format {config.get('format')!r})")
    return config


def write_checkpoint(path: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write `state` to path (.safetensors) and `config` (with the format marker) to the JSON beside it."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(state, str(path), metadata={"format": CHECKPOINT_FORMAT, "adapter": str(config.get("adapter", ""))})
    checkpoint_config_path(path).write_text(json.dumps({"format": CHECKPOINT_FORMAT, **config}, indent=1, default=str))
    return path


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored at path, or a ValueError naming the file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise ValueError(f"cannot read adapter weights {path}: {exc}") from exc


def module_digest(module: nn.Module) -> str:
    """sha256 over every tensor of a module's state dict (names, dtypes, shapes, bytes): the frozen-backbone check."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
