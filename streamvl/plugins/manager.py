"""The plugin registry: builds the pluggy PluginManager and answers typed questions about it."""

from __future__ import annotations

import inspect
from functools import cached_property
from typing import Any, Callable, Iterable, TypeVar

import pluggy

from streamvl.plugins import hookspecs
from streamvl.plugins.contract import AdapterSpec, ColumnProvider, RerankerSpec
from streamvl.errors import PluginError

ENTRY_POINT_GROUP = "streamvl"
T = TypeVar("T", AdapterSpec, ColumnProvider, RerankerSpec)


BUILTIN = "streamvl.plugins.meanpool"  # registered in every manager: `pip install -e .` alone indexes and searches


def build_plugin_manager(extra: Iterable[object] = (), entry_points: bool = True,
                         builtins: bool | None = None) -> pluggy.PluginManager:
    """A manager with the specs, the built-in meanpool, the `streamvl` entry-point plugins and any extra objects.

    builtins defaults to entry_points: a manager of only `extra` plugins (tests, fakes) has no built-in.
    """
    import importlib

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if entry_points if builtins is None else builtins:
        pm.register(importlib.import_module(BUILTIN), name="meanpool")
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:  # an installed plugin failed to import
            raise PluginError(f"loading entry points of group {ENTRY_POINT_GROUP!r} failed: {exc}") from exc
    for plugin in extra:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc), plugin=plugin_label(exc.plugin)) from exc
    return pm


def plugin_label(plugin: object) -> str:
    """A registered plugin's module name (plugins are modules, or objects in tests)."""
    return plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__name__


def _collect(kind: str, hook: Callable[[], list[list[Any]]], cls: type[T]) -> dict[str, T]:
    """Every plugin's answer to a hook, by name: a PluginError if a hook fails, returns something
    other than `cls` instances, or two plugins use one name."""
    try:
        results = hook()
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"a plugin's {kind} hook failed: {exc}") from exc
    found: dict[str, T] = {}
    for specs in results:
        for spec in specs or []:
            if not isinstance(spec, cls):
                raise PluginError(f"a plugin's {kind} hook returned a {type(spec).__name__}, not a {cls.__name__}")
            if spec.name in found:
                raise PluginError(f"two plugins register the {kind} {spec.name!r}", plugin=spec.name)
            found[spec.name] = spec
    return found


class Plugins:
    """Typed view over a PluginManager. Hooks are called lazily, once each."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm if pm is not None else build_plugin_manager()

    @cached_property
    def adapters(self) -> dict[str, AdapterSpec]:
        return _collect("adapter", self.pm.hook.streamvl_adapters, AdapterSpec)

    @cached_property
    def column_providers(self) -> dict[str, ColumnProvider]:
        return _collect("column provider", self.pm.hook.streamvl_clip_columns, ColumnProvider)

    @cached_property
    def rerankers(self) -> dict[str, RerankerSpec]:
        return _collect("reranker", self.pm.hook.streamvl_rerankers, RerankerSpec)

    def adapter(self, name: str) -> AdapterSpec:
        """The adapter spec called `name`, or a PluginError listing what is installed."""
        try:
            return self.adapters[name]
        except KeyError:
            raise PluginError(f"no adapter {name!r}; installed: {sorted(self.adapters) or 'none'}", plugin=name) from None

    def feature_adapter(self, name: str, task: str, remedy: str) -> AdapterSpec:
        """The adapter spec `name` for a task that reads only an index's `frames` table (re-scoring,
        localisation): an adapter that needs frames is refused, since the index keeps no pixels."""
        spec = self.adapter(name)
        if spec.needs_frames:
            raise PluginError(f"adapter {name!r} needs video frames, which the index does not keep: {task} runs on "
                              f"the `frames` table's features; {remedy}", plugin=name)
        return spec

    def reranker(self, name: str) -> RerankerSpec:
        try:
            return self.rerankers[name]
        except KeyError:
            raise PluginError(f"no reranker {name!r}; installed: {sorted(self.rerankers) or 'none'}", plugin=name) from None

    def describe(self) -> dict[str, object]:
        """What `streamvl plugins` shows: plugins with their hooks, and the names they provide
        (adapters with their capabilities and declared options under `adapter_details`)."""
        from streamvl.plugins.options import describe_options

        plugins = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            module = plugin_label(plugin)
            plugins.append({"name": name, "module": module, "hooks": hooks, "builtin": module == BUILTIN})
        return {
            "plugins": plugins,
            "adapters": {n: s.description for n, s in sorted(self.adapters.items())},
            "adapter_details": {n: {"capabilities": sorted(c.value for c in s.capabilities), "needs_frames": s.needs_frames,
                                    "options": describe_options(s.options)} for n, s in sorted(self.adapters.items())},
            "clip_columns": {n: [f.name for f in p.fields] for n, p in sorted(self.column_providers.items())},
            "rerankers": {n: s.description for n, s in sorted(self.rerankers.items())},
        }
