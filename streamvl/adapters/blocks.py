"""Every building block of the trainable first-party adapters, by name (plain torch, no Ray).

The blocks live in modules by job; this module gathers them for plugin code that wants one import:
  base         `TorchAdapter`, the Trainable base class (options, capabilities, checkpoints)
  checkpoints  safetensors weights + JSON config; `module_digest` for the frozen-backbone check
  losses       symmetric NCE and video-to-text cross-entropy
  prompting    learnable prompt vectors through open_clip's frozen text tower
  towers       open_clip vision towers split at their insertion points, with hooks
  temporal     the temporal Transformer, the frame difference, exposure stills
"""

from streamvl.adapters.base import COMMON, MAX_LOGIT_SCALE, TorchAdapter
from streamvl.adapters.checkpoints import (
    CHECKPOINT_FORMAT,
    checkpoint_config_path,
    module_digest,
    read_checkpoint_config,
    read_weights,
    write_checkpoint,
)
from streamvl.adapters.losses import symmetric_nce, video_to_text_nce
from streamvl.adapters.prompting import clip_module, prompt_positions, prompted_text_features, word_embeddings
from streamvl.adapters.temporal import (
    CHANGE_FLOOR,
    CHANGE_SCALE,
    TemporalTransformer,
    add_difference,
    exposure_stills,
    frame_difference,
)
from streamvl.adapters.towers import (
    RESNET,
    VIT,
    Hook,
    InsertionPoint,
    attnpool_dense,
    attnpool_with,
    check_vit,
    freeze_batchnorm,
    from_tokens,
    insertion_points,
    resnet_stages,
    run_tower,
    stage_width,
    to_tokens,
    tower_kind,
    vit_head,
    vit_tokens,
)
from streamvl.plugins.contract import TrainBatch

__all__ = [
    "CHANGE_FLOOR", "CHANGE_SCALE", "CHECKPOINT_FORMAT", "COMMON", "MAX_LOGIT_SCALE", "RESNET", "VIT", "Hook",
    "InsertionPoint", "TemporalTransformer", "TorchAdapter", "TrainBatch", "add_difference", "attnpool_dense",
    "attnpool_with", "check_vit", "checkpoint_config_path", "clip_module", "exposure_stills", "frame_difference",
    "freeze_batchnorm", "from_tokens", "insertion_points", "module_digest", "prompt_positions", "prompted_text_features",
    "read_checkpoint_config", "read_weights", "resnet_stages", "run_tower", "stage_width", "symmetric_nce", "to_tokens",
    "tower_kind", "video_to_text_nce", "vit_head", "vit_tokens", "word_embeddings", "write_checkpoint",
]
