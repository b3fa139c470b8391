"""Where every source row went, and how well each CDM table's codes were mapped.

``SourceAccount`` states for one source table (a Synthea file, a FHIR resource type) how many
rows were read and that each of them was written with a standard concept, written with concept
0, or rejected for a named reason; :meth:`SourceAccount.balanced` checks that they add up.
``TableCoverage`` is the mapping coverage of one CDM table with the unmapped codes listed.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["HarmonizeReport", "SourceAccount", "TableCoverage", "UnmappedCodeCount"]


class SourceAccount(BaseModel):
    """The fate of the rows of one source table."""

    source_table: str
    read: int = 0
    written: int = 0
    concept_0: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        """All rejected rows, whatever the reason."""
        return sum(self.rejected.values())

    def balanced(self) -> bool:
        """True when read = written + concept_0 + rejected."""
        return self.read == self.written + self.concept_0 + self.rejected_total


class UnmappedCodeCount(BaseModel):
    """A source code left at concept 0, with how many rows carry it."""

    vocabulary_id: str
    code: str
    description: str | None = None
    rows: int


class TableCoverage(BaseModel):
    """Mapping coverage of the coded rows of one CDM table.

    ``local_code_rows`` are unmapped rows whose code is no concept of its vocabulary in the
    store: site-local or generator-specific codes (e.g. Synthea's ``QALY``), or real codes the
    vocabulary subset lacks. They are the input of the AI-assisted mapping suggestions.
    """

    table: str
    coded_rows: int = 0
    mapped_rows: int = 0
    local_code_rows: int = 0
    unmapped: list[UnmappedCodeCount] = Field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Share of coded rows that carry a standard concept (1.0 when nothing is coded)."""
        return self.mapped_rows / self.coded_rows if self.coded_rows else 1.0


class HarmonizeReport(BaseModel):
    """The report of one harmonization run (written as JSON next to the CDM folder's tables)."""

    source: str
    kind: str
    cdm_rows: dict[str, int]
    accounts: list[SourceAccount]
    coverage: list[TableCoverage]
    issues: list[dict[str, str]] = Field(default_factory=list)
    seconds: float = 0.0

    @property
    def mapping_coverage(self) -> float:
        """Share of coded CDM rows mapped to a standard concept, over all tables."""
        coded = sum(c.coded_rows for c in self.coverage)
        return sum(c.mapped_rows for c in self.coverage) / coded if coded else 1.0

    @property
    def vocabulary_code_coverage(self) -> float:
        """Coverage over rows whose code is a concept of its vocabulary (local codes left out)."""
        coded = sum(c.coded_rows - c.local_code_rows for c in self.coverage)
        return sum(c.mapped_rows for c in self.coverage) / coded if coded else 1.0

    def balanced(self) -> bool:
        """True when every source table's rows add up."""
        return all(a.balanced() for a in self.accounts)
