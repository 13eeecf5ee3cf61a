"""The query model without its image tower: same text embeddings, less memory, and the query path
takes it only for adapters whose spec says their text side needs the text tower alone."""

from __future__ import annotations

import numpy as np
import pytest

import streamvl.models.loading
import streamvl.models.textonly
from streamvl.errors import ModelLoadError
from streamvl.plugins import AdapterSpec, hookimpl
from streamvl.plugins.manager import Plugins, build_plugin_manager
from streamvl.plugins.meanpool import streamvl_adapters
from streamvl.search import query

TINY = "streamvl-tiny@random:0"


def test_text_model_embeds_texts_exactly_as_the_whole_model_and_refuses_images():
    import torch

    from streamvl.models.loading import load_model
    from streamvl.models.textonly import load_text_model, tokenizer

    whole, text = load_model(TINY), load_text_model(TINY, "fp32")
    texts = ["a red star", "x", "a small blue circle moves left then right"]
    assert torch.equal(text.encode_text(texts), whole.encode_text(texts))
    assert text.weights_sha256 == whole.weights_sha256  # the same weights, recorded the same way
    count = lambda m: sum(p.numel() for p in m.model.parameters())  # noqa: E731
    visual = sum(p.numel() for p in whole.model.visual.parameters())
    assert visual > 0 and count(text) == count(whole) - visual
    with pytest.raises(ModelLoadError, match="text queries only"):
        text.encode_images(np.zeros((1, whole.image_size, whole.image_size, 3), np.uint8))
    assert torch.equal(tokenizer(TINY)(texts), whole.tokenizer(texts))


def test_the_built_in_text_adapters_declare_text_queries():
    specs = {s.name: s for s in streamvl_adapters()}
    assert specs["meanpool"].text_queries and specs["exposure"].text_queries
    assert AdapterSpec("x", object).text_queries is False  # third-party default: the whole model


class Adapter:
    name = "fake"

    def __init__(self, model, options):
        self.model = model

    def encode_video(self, features, frames=None):
        return features

    def encode_text(self, texts):
        return np.ones((len(texts), 4), np.float32)


class Plugin:
    @hookimpl
    def streamvl_adapters(self):
        return [AdapterSpec("texty", Adapter, text_queries=True), AdapterSpec("whole", Adapter)]


@pytest.fixture
def loads(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(streamvl.models.loading, "load_model", lambda spec: calls.append(("whole", spec)) or "whole")
    monkeypatch.setattr(streamvl.models.textonly, "load_text_model", lambda spec: calls.append(("text", spec)) or "text")
    monkeypatch.setattr(query, "_ENCODERS", type(query._ENCODERS)())
    return calls


def test_query_encoders_take_the_text_model_only_when_the_spec_allows_and_no_reranker_needs_more(loads):
    plugins = Plugins(build_plugin_manager(extra=[Plugin()], entry_points=False))
    assert query._encoder(plugins, "texty", "m@random:0", {}).model == "text"
    assert query._encoder(plugins, "whole", "m@random:0", {}).model == "whole"
    assert query._encoder(plugins, "texty", "m@random:0", {}, full_model=True).model == "whole"
    query._encoder(plugins, "texty", "m@random:0", {})  # cached: no second load
    assert loads == [("text", "m@random:0"), ("whole", "m@random:0"), ("whole", "m@random:0")]


def test_text_queries_run_on_one_torch_thread_and_leave_the_process_setting_alone():
    import torch

    from streamvl.models.textonly import TEXT_THREADS, load_text_model

    text = load_text_model(TINY, "fp32")
    seen = []
    hook = text.model.transformer.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        text.encode_text(["a red star"])
        assert seen == [TEXT_THREADS] == [1] and torch.get_num_threads() == 2
    finally:
        hook.remove()
        torch.set_num_threads(before)
