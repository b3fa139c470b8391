"""The harmonization layer's errors.

::

    FedflowError
    └── HarmonizeError                        harmonization cannot go on as asked
        ├── SourceNotFound (FileNotFoundError) a raw export, bundle or vocabulary file is missing
        ├── InvalidSource (ValueError)         a source file does not have the expected layout
        ├── MalformedResource (ValueError)     a FHIR resource fails its R4 model (skipped)
        ├── UnmappedCode (LookupError)         a code has no standard concept where one is required
        ├── VocabularyMissing (LookupError)    the vocabulary store lacks a table the run needs
        ├── ReviewFileInvalid (ValueError)     a mapping review file cannot be accepted as written
        └── EmbeddingUnavailable (ImportError) the optional embedding model is not installed

Messages name files, tables, columns, resource types and ids, never row-level values.
"""

from __future__ import annotations

from fedflow.core.errors import FedflowError

__all__ = [
    "EmbeddingUnavailable",
    "HarmonizeError",
    "InvalidSource",
    "MalformedResource",
    "ReviewFileInvalid",
    "SourceNotFound",
    "UnmappedCode",
    "VocabularyMissing",
]


class HarmonizeError(FedflowError):
    """Root of every error the harmonization layer raises on purpose."""


class SourceNotFound(HarmonizeError, FileNotFoundError):
    """A raw export folder, FHIR bundle or vocabulary file is missing."""


class InvalidSource(HarmonizeError, ValueError):
    """A source file does not have the columns or layout the reader expects."""


class MalformedResource(HarmonizeError, ValueError):
    """A FHIR resource does not validate against its R4 model.

    ``resource_type`` and ``resource_id`` say which one; the run skips it and reports it.
    """

    def __init__(self, message: str, *, resource_type: str, resource_id: str, reason: str) -> None:
        super().__init__(message, reason=reason)
        self.resource_type = resource_type
        self.resource_id = resource_id


class UnmappedCode(HarmonizeError, LookupError):
    """A source code has no standard concept where the caller required one."""

    def __init__(self, message: str, *, vocabulary_id: str, table: str | None = None) -> None:
        super().__init__(message)
        self.vocabulary_id = vocabulary_id
        self.table = table


class VocabularyMissing(HarmonizeError, LookupError):
    """The vocabulary store lacks a table (or was never built)."""


class ReviewFileInvalid(HarmonizeError, ValueError):
    """A mapping review file has missing columns or accepted rows without a target."""


class EmbeddingUnavailable(HarmonizeError, ImportError):
    """The optional sentence-embedding model (extra ``harmonize-ai``) is not installed."""
