"""The plugin registry: entry-point discovery, validation, name clashes."""

import textwrap

import pytest

from streamvl.errors import PluginError
from streamvl.plugins import AdapterSpec, hookimpl
from streamvl.plugins.manager import Plugins, build_plugin_manager


def test_meanpool_is_built_in():
    plugins = Plugins()
    assert "meanpool" in plugins.adapters
    names = {p["name"]: p for p in plugins.describe()["plugins"]}
    assert names["meanpool"]["module"] == "streamvl.plugins.meanpool" and names["meanpool"]["builtin"]


def test_plugin_installed_only_through_an_entry_point_is_picked_up(tmp_path, monkeypatch):
    """A distribution on sys.path with an entry point in group `streamvl`, and nothing else."""
    (tmp_path / "thirdparty_adapter.py").write_text(textwrap.dedent('''
        from streamvl.plugins import AdapterSpec, hookimpl

        @hookimpl
        def streamvl_adapters():
            return [AdapterSpec("thirdparty", lambda model, options: None, "from an entry point")]
    '''))
    dist = tmp_path / "thirdparty_adapter-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-adapter\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[streamvl]\nthirdparty = thirdparty_adapter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = Plugins()
    assert plugins.adapter("thirdparty").description == "from an entry point"
    assert "meanpool" in plugins.adapters  # the built-in stays beside it


def test_unknown_hook_fails_check_pending():
    class Typo:
        @hookimpl
        def streamvl_adaptors(self):
            return []

    with pytest.raises(PluginError, match="streamvl_adaptors"):
        build_plugin_manager(extra=[Typo()], entry_points=False)


def test_duplicate_names_are_rejected():
    class A:
        @hookimpl
        def streamvl_adapters(self):
            return [AdapterSpec("same", lambda m, o: None)]

    class B(A):
        pass

    plugins = Plugins(build_plugin_manager(extra=[A(), B()], entry_points=False))
    with pytest.raises(PluginError, match="same"):
        plugins.adapters


def test_missing_adapter_lists_installed():
    with pytest.raises(PluginError, match="meanpool") as info:
        Plugins().adapter("nope")
    assert info.value.plugin == "nope"


def test_describe_lists_hooks():
    info = Plugins().describe()
    assert {"plugins", "adapters", "clip_columns", "rerankers"} <= set(info)
    assert "streamvl_adapters" in {h for p in info["plugins"] for h in p["hooks"]}
