"""The experiment registry: one entry per reproduced paper (and the generic ``grid``), like timm's ``register_model``.

An experiment is a class derived from :class:`Experiment`, decorated with :func:`register_experiment`, in a
sub-package of :mod:`advguard.experiments` (found automatically) or in any installed package that names it under
the ``advguard.experiments`` entry-point group. The configuration validator, the runner and the CLI read this
registry only, so adding a paper's experiment means adding one folder (see CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, final

from ..errors import unknown_name

if TYPE_CHECKING:  # pragma: no cover
    from .config import Context, ExperimentConfig
    from .schema import Problems, Spec

#: entry-point group under which installed packages register further experiments
ENTRY_POINT_GROUP = "advguard.experiments"

_REGISTRY: dict[str, Experiment] = {}
_ALIASES: dict[str, str] = {}
_discovered = False

E = TypeVar("E", bound=type)

#: what :meth:`Experiment.summary` returns: (header, rows)
Summary = tuple[list[str], list[list[Any]]]


class Experiment(ABC):
    """One paper's reproduction protocol (or the generic grid).

    Subclasses set the class attributes and implement :meth:`run` and :meth:`summary`; the template method
    :meth:`execute` (final) resolves the output and cache folders and calls :meth:`run`.
    """

    #: the slug used by configs (``experiment = "..."``), results folders, tests and docs
    name: ClassVar[str]
    #: the paper it reproduces (one line), shown by ``advguard reproduce --list``
    paper: ClassVar[str] = ""
    #: earlier names accepted in configs
    aliases: ClassVar[tuple[str, ...]] = ()
    #: the top-level configuration tables this experiment owns (e.g. ``("themis",)``)
    sections: ClassVar[tuple[str, ...]] = ()
    #: what the experiment needs from the config's [[attack]] / [[detector]] lists
    needs_attacks: ClassVar[bool] = True
    needs_detectors: ClassVar[bool] = False
    #: the default split of the images ([fit, test] or, for three values, [train, dev, eval])
    fractions: ClassVar[tuple[float, ...]] = (0.8, 0.2)
    #: the artefacts it writes, for the CLI's closing line
    artefacts: ClassVar[str] = "results.json, results.md, *.png, report.html"

    def schema(self) -> dict[str, Spec]:
        """The type schema of each of :attr:`sections` (built lazily: schemas read other registries)."""
        return {}

    def check(self, doc: dict[str, Any], ctx: Context, problems: Problems) -> None:  # noqa: B027 - optional hook, empty by default
        """Checks across keys that a type schema cannot state (add one problem per violation)."""

    def options(self, cfg: ExperimentConfig) -> Any:
        """The experiment's typed options (its sections with their defaults); None when it has none."""
        return None

    @abstractmethod
    def run(self, cfg: ExperimentConfig, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        """Run the protocol, write the results page into ``out`` (create it when writing, not before: a run
        refused before any work leaves nothing on disk); return the results document."""

    @abstractmethod
    def summary(self, doc: dict[str, Any]) -> Summary:
        """The few lines printed at the end of a run: (header, rows)."""

    @final
    def execute(
        self,
        cfg: ExperimentConfig,
        out: str | Path | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = True,
        publish: bool = False,
    ) -> dict[str, Any]:
        """Run ``cfg`` (its output folder: ``out``, else runs/<name>, or the config's ``out`` with ``publish``: see
        :func:`~advguard.experiments.common.bench_paths`; created only when the run writes its results, so a run
        refused before any work leaves nothing on disk)."""
        from .common import bench_paths

        out_dir, cache = bench_paths(cfg, out, cache_dir, publish=publish)
        return self.run(cfg, out_dir, cache, progress)


def register_experiment(cls: E) -> E:
    """Class decorator: register an :class:`Experiment` subclass under its ``name`` (and its aliases)."""
    if not (isinstance(cls, type) and issubclass(cls, Experiment)):
        raise TypeError(f"register_experiment decorates Experiment subclasses, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f'{cls.__name__} needs a class attribute name = "<slug>"')
    for n in (name, *cls.aliases):
        owner = _REGISTRY.get(n) or _REGISTRY.get(_ALIASES.get(n, ""))
        if owner is not None and type(owner) is not cls and type(owner).__qualname__ != cls.__qualname__:
            raise ValueError(f"experiment name {n!r} is already registered by {type(owner).__name__}")
    taken = {s: e.name for e in _REGISTRY.values() for s in e.sections if e.name != name}
    for s in cls.sections:
        if s in taken:
            raise ValueError(f"config section [{s}] of experiment {name!r} is already owned by {taken[s]!r}")
    _REGISTRY[name] = cls()
    for a in cls.aliases:
        _ALIASES[a] = name
    return cls


def unregister_experiment(name: str) -> None:
    """Remove experiment ``name`` and its aliases from the registry (for tests and interactive sessions)."""
    exp = _REGISTRY.pop(name, None)
    for a in getattr(exp, "aliases", ()):
        _ALIASES.pop(a, None)


def discover() -> None:
    """Import every sub-package of :mod:`advguard.experiments` and every entry point of the group (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    pkg = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg:
            importlib.import_module(f"{__package__}.{info.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def experiments() -> dict[str, Experiment]:
    """Every registered experiment by name."""
    discover()
    return dict(_REGISTRY)


def experiment_names(with_aliases: bool = False) -> list[str]:
    discover()
    return sorted(_REGISTRY) + (sorted(_ALIASES) if with_aliases else [])


def canonical_name(name: str) -> str:
    """An experiment's name from its name or an alias (unchanged if unknown)."""
    discover()
    return _ALIASES.get(name, name)


def get_experiment(name: str) -> Experiment:
    discover()
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise unknown_name("experiment", name, sorted(_REGISTRY))
    return _REGISTRY[key]


def section_owners() -> dict[str, str]:
    """Each experiment-owned top-level config table -> the experiment that owns it."""
    discover()
    return {s: e.name for e in _REGISTRY.values() for s in e.sections}
