"""The registry of evaluation protocols, the counterpart of the method registry (:mod:`localign.models.registry`).

A protocol is one :class:`Protocol` record: its task name, the aliases it belongs to, its variants
(tidy task ``<name>:<variant>``), the :class:`~localign.eval.protocols.runner.EvalConfig` field
holding its settings (and that field's config class), whether it needs the text tower, its run
function, its table and its figures. The runner (:func:`~localign.eval.protocols.runner.evaluate_runs`),
:func:`~localign.eval.tables.summary_tables`, :func:`~localign.viz.evaluation.protocol_figures`
and notebook 04 iterate this registry; none of them names a task.

**Adding a protocol** is one file and one registration: write ``eval/protocols/<name>.py`` with
the protocol function, a run adapter ``run(ctx: TaskContext) -> list[ProtocolResult]``, its table
and figure, and ``register_protocol(Protocol(...))`` at its end; then add the module to
:data:`PROTOCOL_MODULES` below (the order there is the order of tasks, tables and figures). Its
settings become the ``EvalConfig`` field it declares (``config_field``), so YAML files, ``--set``
and notebook overrides reach it with no further edit. :mod:`.zero_shot` is a complete example.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from localign.data.manifest import PreparedDataset
    from localign.eval.protocols.common import ProtocolResult
    from localign.data.transforms import Preprocessing
    from localign.eval.protocols.features import StoreCache
    from localign.models.image import ImageEncoder
    from localign.models.methods.base import PretrainModel

#: the modules that register protocols, imported in this order (task, table and figure order)
PROTOCOL_MODULES = (
    "localign.eval.protocols.builtin",
    "localign.eval.protocols.zero_shot",
)


@dataclass(frozen=True)
class TaskContext:
    """What a protocol's run function receives for one (subject, variant).

    :ivar encoder: the image encoder (of a run or a baseline); :ivar prep: its input pipeline.
    :ivar prepared: the prepared dataset it is evaluated on.
    :ivar model: the whole pretrained method (text tower included); None for a baseline.
    :ivar config: the resolved :class:`~localign.eval.protocols.runner.EvalConfig`.
    :ivar stores: image stores shared by the protocols of one evaluation.
    :ivar variant: the variant being run (a segmentation target, a grounding source), or None.
    :ivar device: torch device of the evaluation; :ivar progress: show progress bars.
    """

    encoder: ImageEncoder
    prep: Preprocessing
    prepared: PreparedDataset
    model: PretrainModel | None
    config: Any
    stores: StoreCache
    variant: str | None = None
    device: str = "cpu"
    progress: bool = True


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the evaluation chapter.

    :ivar name: file stem of the saved PNG (``eval_<name>.png``).
    :ivar label: the book's figure name (``fig-eval-...``), for cross-references.
    :ivar caption: the caption shown under the figure (what to read in it).
    :ivar draw: ``draw(results) -> Figure | None`` (None when the results hold nothing to draw), or
        ``"module:function"`` resolved on first use, so that evaluation code need not import
        matplotlib.
    """

    name: str
    label: str
    caption: str
    draw: Callable[[pd.DataFrame], Figure | None] | str

    def __call__(self, results: pd.DataFrame) -> Figure | None:
        fn = self.draw
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        return fn(results)


TableFn = Callable[..., "dict[str, pd.DataFrame]"]


@dataclass(frozen=True)
class Protocol:
    """One downstream protocol (a task of ``localign evaluate``).

    :ivar name: the task name (``--tasks``, the tidy ``task`` column without a variant).
    :ivar run: ``run(ctx) -> list[ProtocolResult]``, one result per (fraction, seed) repetition.
    :ivar description: one line for the task list.
    :ivar aliases: group names that select this task among others (``classify``, ``seg``); every
        task is in ``all``.
    :ivar variants: ``variants(config) -> names``; the task then writes ``<name>:<variant>`` rows,
        one run per variant (None: a single run, tidy task = name).
    :ivar config_field: the ``EvalConfig`` field holding this protocol's settings (shared by
        protocols that declare the same field), or None.
    :ivar config_class: that field's dataclass; ``config_default`` builds its default value
        (default: ``config_class()``).
    :ivar needs_text: the protocol uses the text tower (skipped, with the reason, for baselines).
    :ivar uses_fractions: the protocol repeats over the label fractions (``EvalConfig.fractions``).
    :ivar table: ``table(results, data_label=..., with_paper=...) -> {title: DataFrame}`` (empty
        tables are dropped); protocols sharing one table function get it once.
    :ivar figures: the figures drawn from its rows (shared specs are drawn once).
    """

    name: str
    run: Callable[[TaskContext], list[ProtocolResult]]
    description: str
    aliases: tuple[str, ...] = ()
    variants: Callable[[Any], Sequence[str]] | None = None
    config_field: str | None = None
    config_class: type | None = None
    config_default: Callable[[], Any] | None = None
    needs_text: bool = False
    uses_fractions: bool = False
    table: TableFn | None = None
    figures: tuple[FigureSpec, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or self.name != self.name.lower():
            raise ValueError(f"protocol name {self.name!r}: expected lower-case letters, digits and '_'")
        if (self.config_field is None) != (self.config_class is None):
            raise ValueError(f"protocol {self.name!r}: config_field and config_class go together")

    def tidy_tasks(self, config: Any) -> list[tuple[str, str | None]]:
        """(tidy task name, variant) pairs this protocol writes under ``config``."""
        if self.variants is None:
            return [(self.name, None)]
        return [(f"{self.name}:{v}", v) for v in self.variants(config)]

    def default_config(self) -> Any:
        if self.config_class is None:
            return None
        return self.config_default() if self.config_default is not None else self.config_class()


_PROTOCOLS: dict[str, Protocol] = {}
_loaded = False


def register_protocol(protocol: Protocol) -> Protocol:
    """Add a protocol (its name must be new, and not an alias of others)."""
    if protocol.name in _PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is already registered")
    if protocol.name == "all" or any(protocol.name in p.aliases for p in _PROTOCOLS.values()):
        raise ValueError(f"protocol name {protocol.name!r} is already an alias")
    clash = [a for a in protocol.aliases if a in _PROTOCOLS]
    if clash:
        raise ValueError(f"protocol {protocol.name!r}: alias(es) {clash} are task names")
    for other in _PROTOCOLS.values():
        if protocol.config_field is not None and other.config_field == protocol.config_field \
                and other.config_class is not protocol.config_class:
            raise ValueError(f"protocol {protocol.name!r}: config field {protocol.config_field!r} is {other.config_class} "
                             f"for {other.name!r}, not {protocol.config_class}")
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def unregister_protocol(name: str) -> None:
    """Remove a protocol (tests and notebooks that register a temporary one)."""
    _PROTOCOLS.pop(name, None)


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in PROTOCOL_MODULES:
            importlib.import_module(module)


def protocols() -> list[Protocol]:
    """Every registered protocol, in registration order."""
    _load()
    return list(_PROTOCOLS.values())


def get_protocol(name: str) -> Protocol:
    _load()
    if name not in _PROTOCOLS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(_PROTOCOLS)} (aliases: {', '.join(task_aliases())})")
    return _PROTOCOLS[name]


def task_names() -> tuple[str, ...]:
    return tuple(p.name for p in protocols())


def task_aliases() -> dict[str, tuple[str, ...]]:
    """``{alias: task names}``, the declared aliases in first-use order, then ``all``."""
    out: dict[str, list[str]] = {}
    for p in protocols():
        for alias in p.aliases:
            out.setdefault(alias, []).append(p.name)
    return {**{a: tuple(v) for a, v in out.items()}, "all": task_names()}


def resolve_tasks(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """Task names (a list or a comma-separated string, aliases expanded) in registry order."""
    names, aliases = task_names(), task_aliases()
    items = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks)]
    items = [t for t in items if t]
    if not items:
        raise ValueError(f"tasks: none given; choose from {', '.join(names)} (aliases: {', '.join(aliases)})")
    chosen: set[str] = set()
    for t in items:
        if t in aliases:
            chosen.update(aliases[t])
        elif t in names:
            chosen.add(t)
        else:
            raise ValueError(f"unknown task {t!r}; choose from {', '.join(names)} (aliases: {', '.join(aliases)})")
    return tuple(t for t in names if t in chosen)


def config_fields() -> list[tuple[str, type, Callable[[], Any]]]:
    """(field name, config class, default factory) of every declared ``config_field``, first declaration wins."""
    out: dict[str, tuple[str, type, Callable[[], Any]]] = {}
    for p in protocols():
        if p.config_field is not None and p.config_field not in out:
            out[p.config_field] = (p.config_field, p.config_class, p.default_config)
    return list(out.values())


def protocol_of_task(tidy_task: str) -> Protocol | None:
    """The protocol that wrote a tidy ``task`` value (``seg_linear:rsna`` -> ``seg_linear``), or None."""
    _load()
    return _PROTOCOLS.get(tidy_task.split(":", 1)[0])


def present_protocols(results: pd.DataFrame) -> list[Protocol]:
    """The registered protocols that have rows in a tidy results table, in registry order."""
    tasks = {str(t).split(":", 1)[0] for t in (results["task"] if len(results) else [])}
    return [p for p in protocols() if p.name in tasks]


__all__ = [
    "PROTOCOL_MODULES",
    "FigureSpec",
    "Protocol",
    "TaskContext",
    "config_fields",
    "get_protocol",
    "present_protocols",
    "protocol_of_task",
    "protocols",
    "register_protocol",
    "resolve_tasks",
    "task_aliases",
    "task_names",
    "unregister_protocol",
]
