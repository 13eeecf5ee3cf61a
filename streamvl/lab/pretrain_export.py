"""Export of a pretrained shapes-world model: compact safetensors + JSON with its recipe and history."""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from streamvl.lab.pretrain import PretrainConfig, PretrainResult, about


def check_token_rows(model: Any, seed: int, seen: set[int]) -> dict[str, int]:
    """Verify that only rows of tokens seen in training moved; every other row equals its seeded init bit for bit."""
    from streamvl.models.weights import TOKEN_KEY, changed_rows

    changed = set(changed_rows(model.get_parameter(TOKEN_KEY).detach(), seed).tolist())
    stray = changed - seen
    if stray:
        raise AssertionError(f"token-embedding rows changed without ever being seen: {sorted(stray)[:10]}")
    return {"rows_seen": len(seen), "rows_changed": len(changed)}


def export(result: PretrainResult, config: PretrainConfig, out_dir: str | Path, dtype: str | None = None,
           suffix: str = "") -> tuple[Path, Path]:
    """Write <arch>-<name><suffix>.safetensors + .json (compact format, see streamvl.models.weights) into out_dir.

    dtype overrides config.storage_dtype (e.g. a float32 copy to measure what float16 storage costs).
    """
    import open_clip
    import torch

    from streamvl.models import weights
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = check_token_rows(result.model, config.seed, result.token_ids_seen)
    state = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in result.model.state_dict().items()}
    extra = {
        "name": config.name,
        "arch": config.arch,
        "spec": f"{config.arch}@{config.name}",
        "about": about(config),
        "model_cfg": open_clip.get_model_config(config.arch),
        "training": {
            "recipe": asdict(config),
            "steps_done": result.steps_done,
            "complete": result.steps_done == config.last_step,
            "seconds": round(result.seconds, 1),
            "images_per_s": round(result.images_per_s, 1),
            "images_seen": result.steps_done * config.batch,
            "token_rows": rows,
            "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "history": result.history,
        },
    }
    return weights.save(out_dir / f"{config.arch}-{config.name}{suffix}", state, init_seed=config.seed,
                        dtype=dtype or config.storage_dtype, extra=extra)
