"""Compact, exact weight files for small open_clip models: safetensors + a JSON sidecar.

The token embedding (vocab x width, 49408 x 128 for streamvl-tiny) dwarfs the rest of a tiny
model, yet training on a small caption vocabulary touches only a few hundred rows of it. With
no weight decay on it, Adam leaves every row whose gradient was always zero bit-identical to
its seeded initialisation. So a compact file stores:

- every other tensor (optionally as float16),
- the token-embedding rows that differ from the seeded init (float32, with their row ids),
- in the JSON: the init seed, the storage dtype, the architecture config and the sha256 of the
  full float32 state dict as loaded.

`unpack` rebuilds the init from the seed, patches the stored rows and the caller checks the
digest: a torch/numpy change that alters the init, an edited tensor or a changed architecture
config is a loud mismatch, never a silently different model. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch

FORMAT = "streamvl-compact-v1"
TOKEN_KEY = "token_embedding.weight"
ROW_IDS_KEY = "token_embedding.row_ids"
ROWS_KEY = "token_embedding.rows"
TOKEN_INIT_STD = 0.02  # open_clip's CLIP.init_parameters uses the same std
TOKEN_INIT = "numpy.random.default_rng(seed).standard_normal((vocab, width), float32) * 0.02"


class CompactFormatError(ValueError):
    """A compact weight file is malformed or does not rebuild to its recorded digest."""


def seeded_token_embedding(seed: int, vocab: int, width: int) -> "torch.Tensor":
    """The token-embedding init: a float32 [vocab, width] normal(0, 0.02) matrix fixed by `seed` (numpy PCG64)."""
    import torch

    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((vocab, width), dtype=np.float32) * np.float32(TOKEN_INIT_STD))


def state_digest(state: Mapping[str, "torch.Tensor"]) -> str:
    """sha256 (hex) over names and float bytes of a state dict, in sorted name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def changed_rows(token: "torch.Tensor", seed: int) -> "torch.Tensor":
    """Row ids (int64, ascending) where `token` differs from its seeded init in any element."""
    init = seeded_token_embedding(seed, *token.shape)
    return (token != init).any(dim=1).nonzero().flatten().to(dtype=_int64())


def _int64() -> Any:
    import torch

    return torch.int64


def _storage_dtype(name: str) -> Any:
    import torch

    dtypes = {"float16": torch.float16, "float32": torch.float32}
    if name not in dtypes:
        raise CompactFormatError(f"storage dtype must be one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


def _cast(tensor: "torch.Tensor", dtype: Any) -> "torch.Tensor":
    """Floating tensors to `dtype`; integer ones (e.g. BatchNorm's num_batches_tracked) unchanged."""
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def pack(
    state: Mapping[str, "torch.Tensor"], *, init_seed: int, dtype: str = "float16"
) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    """A state dict (float32 floats) -> (tensors to save, JSON-ready format record incl. the loaded digest)."""
    token = state[TOKEN_KEY].detach().float()
    rows = changed_rows(token, init_seed)
    store = _storage_dtype(dtype)
    tensors = {k: _cast(v.detach(), store).contiguous() for k, v in state.items() if k != TOKEN_KEY}
    tensors[ROW_IDS_KEY] = rows.contiguous()
    tensors[ROWS_KEY] = token[rows].contiguous()
    record: dict[str, Any] = {
        "format": FORMAT,
        "storage_dtype": dtype,
        "token_embedding": {
            "key": TOKEN_KEY, "init": TOKEN_INIT, "seed": int(init_seed),
            "shape": list(token.shape), "rows_stored": int(rows.numel()),
        },
    }
    record["sha256"] = state_digest(unpack(tensors, record))
    return tensors, record


def unpack(tensors: Mapping[str, "torch.Tensor"], record: Mapping[str, Any]) -> dict[str, "torch.Tensor"]:
    """Saved tensors + format record -> the full state dict, floats as float32 (token embedding rebuilt)."""
    if record.get("format") != FORMAT:
        raise CompactFormatError(f"not a {FORMAT} record (format={record.get('format')!r})")
    tok = record["token_embedding"]
    if ROW_IDS_KEY not in tensors or ROWS_KEY not in tensors:
        raise CompactFormatError(f"missing {ROW_IDS_KEY!r} or {ROWS_KEY!r}")
    vocab, width = (int(x) for x in tok["shape"])
    rows, ids = tensors[ROWS_KEY].float(), tensors[ROW_IDS_KEY]
    if rows.shape != (ids.numel(), width) or (ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab)):
        raise CompactFormatError(f"token rows {tuple(rows.shape)} / ids do not fit a {vocab}x{width} embedding")
    token = seeded_token_embedding(int(tok["seed"]), vocab, width)
    token[ids] = rows
    state = {k: _cast(v, _storage_dtype("float32")) for k, v in tensors.items() if k not in (ROW_IDS_KEY, ROWS_KEY)}
    state[tok["key"]] = token
    return state


def files(stem: str | Path) -> tuple[Path, Path]:
    """The (weights, JSON) paths of a compact model called `stem` (a path without suffix)."""
    stem = Path(stem)
    return stem.parent / f"{stem.name}.safetensors", stem.parent / f"{stem.name}.json"


def save(stem: str | Path, state: Mapping[str, "torch.Tensor"], *, init_seed: int, dtype: str = "float16",
         extra: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write `stem`.safetensors and `stem`.json; extra keys (arch, model_cfg, training, eval) go in the JSON."""
    from safetensors.torch import save_file

    tensors, record = pack(state, init_seed=init_seed, dtype=dtype)
    weights, sidecar = files(stem)
    save_file(tensors, str(weights), metadata={"format": FORMAT, "sha256": record["sha256"]})
    sidecar.write_text(json.dumps(dict(extra or {}) | record, indent=1) + "\n")
    return weights, sidecar


def load(stem: str | Path) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    """Read `stem`.safetensors + `stem`.json -> (full float32 state dict, JSON record). The caller checks the digest."""
    from safetensors.torch import load_file

    weights, sidecar = files(stem)
    record = json.loads(sidecar.read_text())
    tensors = load_file(str(weights))
    return unpack(tensors, record), record
