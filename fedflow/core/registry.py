"""The analysis registry: how analyses reach a site without the site importing flow code.

Analyses are found through the ``fedflow.analyses`` entry-point group (the library ships its
own there, and so can any installed package) and through :func:`register` for analyses defined
in a notebook or script.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from importlib.metadata import entry_points
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from fedflow.core.analysis import Analysis, AnalysisRef, OutputKind
from fedflow.core.controls import Control
from fedflow.core.errors import ConfigError, UnknownAnalysis

__all__ = ["AnalysisRegistry", "default_registry", "register"]

__controls__ = (
    Control(
        "NIST SI-7",
        "Each analysis carries a digest of its code; a site refuses a request whose digest does "
        "not match its own copy, or that its policy does not list.",
        tests=(
            "tests/fedflow/core/test_registry.py::test_code_digest_covers_the_analysis_and_its_bases",
            "tests/executors/test_node.py::test_code_digest_mismatch_and_unlisted_columns_are_denied",
        ),
    ),
)

A = TypeVar("A", bound=type[Analysis[Any]])


class AnalysisRegistry:
    """Analyses by name and version."""

    def __init__(self, analyses: tuple[type[Analysis[Any]], ...] = ()) -> None:
        self._by_name: dict[str, dict[str, type[Analysis[Any]]]] = {}
        for cls in analyses:
            self.add(cls)

    def add(self, cls: A) -> A:
        """Register ``cls``; fails fast on an incomplete class or a clashing name@version."""
        missing = [a for a in ("name", "version", "output", "params_model") if not hasattr(cls, a)]
        if missing:
            raise ConfigError(f"analysis {cls.__qualname__} does not set {', '.join(missing)}")
        if not isinstance(cls.output, OutputKind):
            raise ConfigError(f"analysis {cls.name} declares an unknown output kind")
        try:
            Version(cls.version)
        except InvalidVersion:
            raise ConfigError(
                f"analysis {cls.name} has an invalid version {cls.version!r}"
            ) from None
        versions = self._by_name.setdefault(cls.name, {})
        known = versions.get(cls.version)
        if known is not None and known is not cls and known.ref() != cls.ref():
            raise ConfigError(f"{cls.name}@{cls.version} is already registered with other code")
        versions[cls.version] = cls
        return cls

    def get(self, name: str, version: str | None = None) -> Analysis[Any]:
        """An instance of ``name`` at ``version`` (the highest version when None)."""
        versions = self._by_name.get(name)
        if not versions:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownAnalysis(
                f"unknown analysis {name!r} (known: {known})", reason="unknown_analysis"
            )
        if version is None:
            version = max(versions, key=Version)
        cls = versions.get(version)
        if cls is None:
            raise UnknownAnalysis(
                f"analysis {name!r} has no version {version!r} "
                f"(known: {', '.join(sorted(versions))})",
                reason="unknown_version",
            )
        return cls()

    def resolve(self, ref: AnalysisRef) -> Analysis[Any]:
        """The analysis a request names by name and version (the gate checks the code digest)."""
        return self.get(ref.name, ref.version)

    def __iter__(self) -> Iterator[type[Analysis[Any]]]:
        for name in sorted(self._by_name):
            versions = self._by_name[name]
            for version in sorted(versions, key=Version):
                yield versions[version]


@cache
def default_registry() -> AnalysisRegistry:
    """The process-wide registry, filled from the ``fedflow.analyses`` entry points."""
    registry = AnalysisRegistry()
    for ep in entry_points(group="fedflow.analyses"):
        registry.add(ep.load())
    return registry


def register(cls: A) -> A:
    """Class decorator: add an analysis to the process-wide registry."""
    return default_registry().add(cls)
