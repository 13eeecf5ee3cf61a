"""The plugin contract a third party imports, and the manager and built-in meanpool beside it.

    from streamvl.plugins import AdapterSpec, Capability, Option, hookimpl

Everything streamvl asks of a plugin is a hook (`hookspecs`) or a Protocol (`contract`); see
docs/plugins.md. First-party plugins import the contract from here only.
"""

from streamvl.plugins.contract import (
    PROTOCOLS,
    AdapterFactory,
    AdapterSpec,
    Capability,
    ClipBatch,
    ColumnProvider,
    Localising,
    Option,
    RerankContext,
    RerankerSpec,
    Scoring,
    Trainable,
    TrainBatch,
    VideoAdapter,
)
from streamvl.plugins.hookspecs import hookimpl
from streamvl.plugins.options import resolve_options, validate_options

__all__ = [
    "PROTOCOLS",
    "AdapterFactory",
    "AdapterSpec",
    "Capability",
    "ClipBatch",
    "ColumnProvider",
    "Localising",
    "Option",
    "RerankContext",
    "RerankerSpec",
    "Scoring",
    "TrainBatch",
    "Trainable",
    "VideoAdapter",
    "hookimpl",
    "resolve_options",
    "validate_options",
]
