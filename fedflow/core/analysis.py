"""The analysis contract: a federated analysis is a mergeable aggregate.

``local`` runs at a site over one partition and returns an Arrow table (a *partial*);
``merge`` combines partials (associative and commutative: it merges partitions inside a site
and sites inside the federation); ``finalize`` turns the merged partial into the result.
An analysis declares the tables and columns it reads (the site hands ``local`` only those),
its output kind (which tells the airlock which disclosure rules apply), a name, a version and
a code digest.

An analysis that counts one cohort of persons may also derive from :class:`CountsCohort`, an
optional extension: its ``local_members`` returns the partial together with the person ids of
the cohort the partition counted. The site keeps those ids to itself (its differencing defence
compares released cohorts); they are never part of the partial.
"""

from __future__ import annotations

import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from enum import StrEnum
from functools import cache
from typing import Any, ClassVar, Generic, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from fedflow.core.configfile import describe_problems
from fedflow.core.digest import digest_bytes
from fedflow.core.errors import InvalidParameters

__all__ = ["Analysis", "AnalysisRef", "CountsCohort", "OutputKind", "Params", "TableColumns"]

TableColumns = Mapping[str, Sequence[str]]


class OutputKind(StrEnum):
    """What a partial is, so the airlock knows which disclosure rules apply."""

    FREQUENCY = "frequency"
    """Counts of persons per cell; see :mod:`fedflow.core.frequency`."""
    SUMMARY = "summary"
    """Count, moments, extremes and sketch of a variable; see :mod:`fedflow.core.summary`."""
    REGRESSION = "regression"
    """Sufficient statistics of one GLM round; see :mod:`fedflow.core.regression`."""
    SURVIVAL = "survival"
    """Events and censorings per group on a time grid; see :mod:`fedflow.core.survival`."""
    COX = "cox"
    """Risk-set sums of one Cox proportional-hazards round on a time grid; see
    :mod:`fedflow.core.cox`."""
    GWAS = "gwas"
    """Per-variant sufficient statistics of one GWAS round; see :mod:`fedflow.core.gwas`."""
    MAGNITUDE = "magnitude"
    """Persons and sums of a variable per cell; see :mod:`fedflow.core.magnitude`."""


class Params(BaseModel):
    """Base of every analysis's parameter model: frozen, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


P = TypeVar("P", bound=Params)


class AnalysisRef(BaseModel):
    """How a request names an analysis: ``name@version`` and the digest of its code."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    code_digest: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class Analysis(ABC, Generic[P]):
    """Base class of every federated analysis. Subclasses set the class attributes below."""

    name: ClassVar[str]
    version: ClassVar[str]
    output: ClassVar[OutputKind]
    params_model: ClassVar[type[Params]]
    iterated: ClassVar[frozenset[str]] = frozenset()
    """The parameters that change between the rounds of one fit (a model's coefficients).
    A site whose gate allowed a round of a fit runs its later rounds, which differ only in
    these, as light steps (:meth:`executors.node.SiteNode.step`). Empty: every request is
    decided afresh."""

    @abstractmethod
    def tables(self, params: P) -> TableColumns:
        """The tables and columns ``local`` reads for these parameters."""

    @abstractmethod
    def local(self, tables: Mapping[str, pa.Table], params: P) -> pa.Table:
        """Compute the partial over one partition of a site's data."""

    @abstractmethod
    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        """Combine partials; associative and commutative."""

    @abstractmethod
    def finalize(self, partial: pa.Table, params: P) -> pa.Table:
        """Turn the merged partial into the result a researcher reads."""

    # -- provided -------------------------------------------------------------------------

    def parse_params(self, raw: Mapping[str, Any] | Params) -> P:
        """Validate raw parameters; errors name the fields, never echo their values."""
        if isinstance(raw, self.params_model):
            return raw  # type: ignore[return-value]
        if not isinstance(raw, Mapping):
            raise InvalidParameters(
                f"parameters for {self.name}@{self.version} must be a JSON object",
                reason="invalid_parameters",
            )
        try:
            return self.params_model.model_validate(dict(raw))  # type: ignore[return-value]
        except ValidationError as exc:
            raise InvalidParameters(
                f"invalid parameters for {self.name}@{self.version}: {describe_problems(exc)}",
                reason="invalid_parameters",
            ) from None

    @classmethod
    def ref(cls) -> AnalysisRef:
        """This analysis's name, version and code digest."""
        return AnalysisRef(name=cls.name, version=cls.version, code_digest=code_digest(cls))


class CountsCohort(ABC):
    """Optional extension of :class:`Analysis`: the analysis counts one cohort of persons.

    Mix it into an :class:`Analysis` subclass. ``local_members`` replaces ``local`` when the site
    wants to know who was counted: it returns the same partial as ``local`` and the ids of the
    persons of the partition's cohort (every person once). Those ids stay at the site.
    """

    @abstractmethod
    def local_members(
        self, tables: Mapping[str, pa.Table], params: Any
    ) -> tuple[pa.Table, pa.Array]:
        """The partial of one partition and the person ids (int64) of the cohort it counted."""


@cache
def code_digest(cls: type[Analysis[Any]]) -> str:
    """Digest of the source of every module that defines ``cls`` or one of its analysis bases.

    Falls back to a class's own source when its module has none (e.g. in a notebook).
    """
    parts: list[str] = []
    for klass in cls.__mro__:
        if klass.__module__ in {__name__, "abc", "typing", "builtins"}:
            continue
        module = sys.modules.get(klass.__module__)
        try:
            source = inspect.getsource(module) if module is not None else inspect.getsource(klass)
        except (OSError, TypeError):
            source = inspect.getsource(klass)
        entry = f"# module {klass.__module__}\n{source}"
        if entry not in parts:
            parts.append(entry)
    return digest_bytes("\n".join(parts).encode())
