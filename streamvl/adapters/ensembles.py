"""Ensembles of one trainable adapter: `members` independently initialised copies, trained together.

A plugin opts in by registering `ensemble_spec(AdapterClass, description)`, whose factory is
`ensemble_factory(AdapterClass)`: with the option `members` = 1 (the default) the factory builds the
plain adapter, with N > 1 an `Ensemble` of N copies. Each copy starts from its own random
initialisation (and draws its own dropout masks), sees the same batches and is optimised on its own
loss as if alone; gradients are clipped per copy. Few labelled clips fit many solutions, and copies
that disagree on held-out clips average out: on the shapes world's few-shot split (8 clips per
class) 4 copies of prompt lift top-1 by 4-5 points over one (README, "Adapter results").

The ensemble answers in the members' shared space, so it indexes, searches and re-scores like one
adapter of the backbone's width: its video (text) embedding is the normalised mean of the members'
normalised video (text) embeddings, as CLIP averages the text embeddings of several prompt
templates. Adapters whose score of a clip depends on the text (litevl's text-dependent pooling,
xclip's video-specific prompts) are scored by the mean of the members' scores. Cost: N times the
adapter's parameters, training and inference time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamvl.adapters.base import TorchAdapter
from streamvl.adapters.checkpoints import read_checkpoint_config
from streamvl.plugins import AdapterSpec, Capability, Option, TrainBatch

if TYPE_CHECKING:
    from streamvl.models.loading import LoadedModel

MEMBERS = Option("members", int, 1, "independently initialised copies trained together; >1 builds an ensemble")


class Ensemble(TorchAdapter):
    """N copies of `member_class` behind one adapter; see the module docstring."""

    member_class: type[TorchAdapter] = TorchAdapter

    def __init__(self, model: "LoadedModel", options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self.logit_scale.requires_grad_(False)  # unused: each member keeps its own (see scale)

    def build(self) -> None:
        n = int(self.options["members"])
        if n < 2:
            raise ValueError(f"{self.name}: an ensemble needs members >= 2, got {n}")
        own = {k: v for k, v in self.options.items() if k != "members"}
        self.members = nn.ModuleList([self.member_class(self.backbone, dict(own)) for _ in range(n)])

    def video_embed(self, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(torch.stack([m.video_embed(features, frames) for m in self.members]).mean(0), dim=-1)

    def text_embed(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(torch.stack([m.text_embed(texts) for m in self.members]).mean(0), dim=-1)

    def scores(self, features: torch.Tensor, frames: torch.Tensor | None, texts: Sequence[str]) -> torch.Tensor:
        if self.member_class.scores is TorchAdapter.scores:  # embeddings alone define the score
            return super().scores(features, frames, texts)
        return torch.stack([m.scores(features, frames, texts) for m in self.members]).mean(0)

    def scale(self) -> torch.Tensor:
        """The members' mean inverse temperature (the ensemble's own is not trained)."""
        return torch.stack([m.scale() for m in self.members]).mean()

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum of the members' own losses: each member's gradient is the one it would get alone."""
        total = torch.zeros(())
        logs: dict[str, float] = {}
        for m in self.members:
            loss, member_logs = m.training_loss(batch)
            total = total + loss
            for k, v in member_logs.items():
                logs[k] = logs.get(k, 0.0) + v / len(self.members)
        return total, logs

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [group for m in self.members for group in m.param_groups(lr)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.members for p in m.trainable_parameters()]

    def clip_gradients(self, max_norm: float) -> None:
        for m in self.members:
            m.clip_gradients(max_norm)


class ProposalEnsemble(Ensemble):
    """An ensemble of adapters with a class-agnostic proposal head (prompt): mean actionness."""

    def actionness(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.actionness(features) for m in self.members]).mean(0)

    def proposal_loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.proposal_loss(features, targets) for m in self.members]).sum()


def ensemble_class(cls: type[TorchAdapter]) -> type[Ensemble]:
    """The Ensemble subclass for adapter class `cls`: same name, capabilities, options (plus `members`) and needs."""
    base = ProposalEnsemble if Capability.LOCALISES in cls.capabilities else Ensemble
    attrs = {"name": cls.name, "member_class": cls, "needs_frames": cls.needs_frames, "capabilities": cls.capabilities,
             "class_objective": cls.class_objective, "declared_options": (*cls.declared_options, MEMBERS),
             "__doc__": f"An ensemble of {cls.__name__} copies (streamvl.adapters.ensembles)."}
    return type(f"{cls.__name__}Ensemble", (base,), attrs)


def members_option(options: dict[str, Any]) -> int:
    """`members` from the options, else from the checkpoint's saved options, else 1."""
    if "members" in options:
        n = options["members"]
    elif options.get("checkpoint"):
        n = read_checkpoint_config(options["checkpoint"]).get("options", {}).get("members", 1)
    else:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"members must be a whole number >= 1, got {n!r}")
    return n


def ensemble_spec(cls: type[TorchAdapter], description: str) -> AdapterSpec:
    """The AdapterSpec of adapter class `cls` with the `members` option (ensemble_factory)."""
    return cls.spec(description, factory=ensemble_factory(cls), extra=(MEMBERS,))


def ensemble_factory(cls: type[TorchAdapter]) -> Callable[["LoadedModel", dict[str, Any]], TorchAdapter]:
    """An adapter factory taking the extra option `members`: the plain adapter for 1, an Ensemble for more."""
    ensemble = ensemble_class(cls)

    def build(model: "LoadedModel", options: dict[str, Any]) -> TorchAdapter:
        options = dict(options)
        n = members_option(options)
        if n == 1:
            options.pop("members", None)
            return cls(model, options)
        return ensemble(model, {**options, "members": n})

    build.__doc__ = f"{cls.__name__}, or an ensemble of them with the option members > 1."
    return build
