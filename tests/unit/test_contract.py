"""The plugin contract (streamvl.plugins.contract): core decides from the spec, options are declared
once, and a meta-test that fails when a hookspec or a Protocol member has no test (datasette's idea).

A test claims what it exercises with `@pytest.mark.contract("streamvl_adapters", "Trainable.save")`;
the claim counts only if the test's own source uses the name (as `.save(`, `test_hook_streamvl_adapters`).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from streamvl.errors import OptionError, PluginError
from streamvl.models.loading import load_model
from streamvl.plugins import (
    PROTOCOLS,
    AdapterSpec,
    Capability,
    Option,
    RerankContext,
    VideoAdapter,
    hookimpl,
    resolve_options,
    validate_options,
)
from streamvl.plugins import hookspecs
from streamvl.plugins.manager import Plugins, build_plugin_manager

TESTS = Path(__file__).resolve().parents[1]
SPEC = "streamvl-tiny@random:0"
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ---------------------------------------------------------------- the meta-test


def contract_names() -> list[str]:
    """Every hookspec, and every member (method or attribute) each contract Protocol declares itself."""
    hooks = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("streamvl_"))
    members = []
    for proto in (VideoAdapter, *PROTOCOLS.values()):
        own = [n for n, v in vars(proto).items() if not n.startswith("_") and inspect.isfunction(v)]
        own += list(vars(proto).get("__annotations__", {}))
        members += [f"{proto.__name__}.{n}" for n in own]
    return hooks + members


def claims(root: Path) -> dict[str, list[str]]:
    """name -> the tests (path::function) that claim it with @pytest.mark.contract and use it in their source."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("test_*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.name.startswith("test"):
                continue
            body = ast.get_source_segment(source, node) or ""  # from `def` on: the claim itself is no evidence
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and ast.unparse(dec.func) == "pytest.mark.contract":
                    for arg in dec.args:
                        name = arg.value if isinstance(arg, ast.Constant) else ast.unparse(arg)
                        member = name.rsplit(".", 1)[-1]
                        if re.search(rf"(?<![A-Za-z0-9]){re.escape(member)}(?![A-Za-z0-9_])", body):
                            found.setdefault(name, []).append(f"{path.relative_to(root)}::{node.name}")
    return found


def untested(names: list[str], claimed: dict[str, list[str]]) -> list[str]:
    return [n for n in names if not claimed.get(n)]


def test_every_hookspec_and_protocol_member_has_a_test():
    names = contract_names()
    assert {"streamvl_adapters", "VideoAdapter.encode_video", "Trainable.training_loss", "Localising.actionness"} <= set(names)
    missing = untested(names, claims(TESTS))
    assert not missing, f"contract names no test exercises (mark one with @pytest.mark.contract(...)): {missing}"


def test_every_claim_names_a_real_hook_or_protocol_member():
    stale = sorted(set(claims(TESTS)) - set(contract_names()))
    assert not stale, f"@pytest.mark.contract names nothing in the contract (renamed or removed?): {stale}"


def test_the_meta_test_fails_for_an_untested_hook_or_member_and_for_a_claim_without_use(tmp_path):
    claimed = claims(TESTS)
    assert untested(contract_names() + ["streamvl_frobnicate", "Trainable.frobnicate"], claimed) \
        == ["streamvl_frobnicate", "Trainable.frobnicate"]
    (tmp_path / "test_fake.py").write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.contract("Scoring.scores", "streamvl_rerankers")
        def test_claims_but_never_uses():
            assert True

        @pytest.mark.contract("Scoring.scale")
        def test_uses(adapter):
            adapter.scale()
    '''))
    fake = claims(tmp_path)
    assert untested(["Scoring.scores", "streamvl_rerankers", "Scoring.scale"], fake) == ["Scoring.scores", "streamvl_rerankers"]


# ---------------------------------------------------------------- specs and capabilities


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


class PlainAdapter:
    """A VideoAdapter with a `scores` method that its spec does not declare: core must not call it."""

    name = "plain"

    def __init__(self, model, options):
        self.model, self.options = model, resolve_options("plain", PLAIN_OPTIONS, options)

    def encode_video(self, features, frames=None):
        return torch.nn.functional.normalize(features.float().mean(dim=1), dim=-1)

    def encode_text(self, texts):
        return self.model.encode_text(list(texts))

    def scores(self, features, frames, texts):  # not declared: a stray method, never a capability
        raise AssertionError("core called scores() of an adapter whose spec does not declare SCORES")


PLAIN_OPTIONS = (Option("gain", float, 1.0, "a number"), Option("words", list[str], ["a"], "words"))


def test_capabilities_add_what_they_imply_and_are_read_from_the_spec():
    spec = AdapterSpec("x", PlainAdapter, capabilities={"localises"})
    assert spec.capabilities == {Capability.LOCALISES, Capability.TRAINABLE, Capability.SCORES}
    assert AdapterSpec("y", PlainAdapter).capabilities == frozenset()
    with pytest.raises(PluginError, match="cannot be used for training: it is not 'trainable'"):
        AdapterSpec("y", PlainAdapter).require(Capability.TRAINABLE, "training")
    with pytest.raises(ValueError):
        AdapterSpec("z", PlainAdapter, capabilities={"flies"})
    with pytest.raises(ValueError, match="twice"):
        AdapterSpec("z", PlainAdapter, options=PLAIN_OPTIONS + PLAIN_OPTIONS[:1])


def test_every_installed_adapter_implements_what_its_spec_declares(model, plugins):
    assert {"meanpool", "exposure", "prompt", "prompt-exposure", "alpro", "litevl", "xclip"} <= set(plugins.adapters)
    for name, spec in plugins.adapters.items():
        adapter = spec.build(model, {})
        assert isinstance(adapter, VideoAdapter), name
        for capability in spec.capabilities:
            assert isinstance(adapter, PROTOCOLS[capability]), (name, capability)
    assert plugins.adapter("prompt").can(Capability.LOCALISES) and not plugins.adapter("alpro").can(Capability.LOCALISES)
    assert not plugins.adapter("meanpool").capabilities


def test_a_spec_promising_more_than_its_object_does_is_refused_at_build(model):
    spec = AdapterSpec("liar", PlainAdapter, capabilities={Capability.TRAINABLE}, options=PLAIN_OPTIONS)
    with pytest.raises(PluginError, match="does not implement Scoring, Trainable"):
        spec.build(model, {})


def test_a_hook_returning_the_wrong_type_is_a_plugin_error():
    class Broken:
        @hookimpl
        def streamvl_adapters(self):
            return [("not", "a", "spec")]

    with pytest.raises(PluginError, match="not a AdapterSpec"):
        Plugins(build_plugin_manager(extra=[Broken()], entry_points=False)).adapters


def test_options_are_declared_once_and_validated_from_the_declaration(model):
    spec = AdapterSpec("plain", PlainAdapter, options=PLAIN_OPTIONS)
    assert spec.build(model, {}).options == {"gain": 1.0, "words": ["a"]}
    assert spec.build(model, {"gain": 2}).options["gain"] == 2.0  # an int is a number
    with pytest.raises(OptionError, match=r"unknown plain option\(s\) \['gian'\]; known: \['gain', 'words'\]") as info:
        spec.build(model, {"gian": 2.0})
    assert isinstance(info.value, ValueError) and info.value.plugin == "plain"
    for bad in ("2", True, None):
        with pytest.raises(OptionError, match="plain option 'gain' must be a number"):
            spec.build(model, {"gain": bad})
    with pytest.raises(OptionError, match="'words' must be list"):
        spec.build(model, {"words": "a"})
    # a checkpoint's saved options sit between the defaults and the given ones
    assert resolve_options("plain", PLAIN_OPTIONS, {"gain": 3.0}, {"gain": 2.0, "words": ["b"]}) == {"gain": 3.0, "words": ["b"]}
    assert validate_options("plain", PLAIN_OPTIONS, {}) == {}
    first = resolve_options("plain", PLAIN_OPTIONS, {})
    first["words"].append("mutated")
    assert resolve_options("plain", PLAIN_OPTIONS, {})["words"] == ["a"]  # defaults are copied


def test_the_first_party_options_are_declared_with_docs(plugins):
    details = plugins.describe()["adapter_details"]
    prompt = {o["name"]: o for o in details["prompt"]["options"]}
    assert prompt["difference"]["type"] == "a number" and prompt["difference"]["default"] == 0.0
    assert {"checkpoint", "template", "members"} <= set(prompt)
    assert details["exposure"]["needs_frames"] and details["meanpool"]["capabilities"] == []
    assert details["prompt"]["capabilities"] == ["localises", "scores", "trainable"]
    assert all(o["doc"] for d in details.values() for o in d["options"])
    assert {o["name"] for o in details["alpro"]["options"]} >= {"entities", "tag_threshold"}


@pytest.mark.contract("Trainable.train", "Trainable.eval", "Trainable.backbone")
def test_trainable_mode_switches_and_the_frozen_backbone(model, plugins):
    a = plugins.adapter("prompt").build(model, {"dropout": 0.5})
    assert a.backbone is model and not any(k.startswith("backbone") for k in a.state_dict())
    assert not any(p.requires_grad for p in a.backbone.model.parameters())
    feats = torch.randn(2, 8, model.embed_dim)
    assert a.train() is a and a.training
    with torch.no_grad():
        assert not torch.equal(a.video_embed(feats), a.video_embed(feats))  # dropout on
    assert a.eval() is a and not a.training
    with torch.no_grad():
        torch.testing.assert_close(a.video_embed(feats), a.video_embed(feats))


# ---------------------------------------------------------------- core reads the spec, not the object


def test_evaluation_scores_with_the_adapter_only_when_its_spec_declares_it(model):
    from streamvl.pipeline.features import ClipFeatures
    from streamvl.training.evaluate import score_matrix, whole_views
    from streamvl.training.train import ClipData

    spec = AdapterSpec("plain", PlainAdapter, options=PLAIN_OPTIONS)
    adapter = spec.build(model, {})
    rng = np.random.default_rng(0)
    feats = [ClipFeatures(np.arange(4, dtype=np.float64), rng.standard_normal((4, model.embed_dim)).astype(np.float32))
             for _ in range(3)]
    data = ClipData((), feats)
    got = score_matrix(spec, adapter, model, data, whole_views(data), ["a", "b"], frames=4)  # PlainAdapter.scores would raise
    want = adapter.encode_video(torch.from_numpy(np.stack([f.features for f in feats]))) @ adapter.encode_text(["a", "b"]).t()
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_training_is_refused_from_the_spec_before_a_model_loads(monkeypatch, tmp_path):
    import streamvl.models.loading as loading
    from streamvl.training.train import run_training

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded a model for an untrainable adapter"))
    with pytest.raises(PluginError, match="'meanpool' cannot be used for training"):
        run_training("meanpool", "shapes:closed_set", tmp_path / "x.safetensors", log=lambda m: None)


def test_localisation_and_frame_reranking_are_refused_from_the_spec(model, plugins, tmp_path):
    from streamvl.search.localisation import localise_index
    from streamvl.search.rereading import rerank_with_frames

    with pytest.raises(PluginError, match="'alpro' cannot be used for localisation"):
        localise_index(str(tmp_path / "db"), "alpro")
    spec = AdapterSpec("plain", PlainAdapter, options=PLAIN_OPTIONS)
    context = RerankContext("q", np.zeros(model.embed_dim, np.float32), spec.build(model, {}), spec, model, store=None)
    with pytest.raises(PluginError, match="'plain' cannot be used for reranking"):
        rerank_with_frames(context, [])
