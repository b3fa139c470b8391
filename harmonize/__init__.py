"""Harmonization: Synthea CSV and FHIR R4 bundles into OMOP CDM v5.4 parquet, VCF genotypes
into the site's genotype store (:mod:`harmonize.vcf`), at the site.

One call per source builds a CDM folder (clinical tables + the vocabulary tables used), with
every source row accounted for, a mapping coverage report, AI-assisted mapping suggestions for
the codes no vocabulary covers, and conformance checks generated from the OHDSI specification::

    from harmonize import harmonize_synthea, check_folder
    report = harmonize_synthea(Path("raw"), Path("omop"))
"""

from __future__ import annotations

from harmonize.accounting import HarmonizeReport, SourceAccount, TableCoverage, UnmappedCodeCount
from harmonize.api import harmonize_fhir, harmonize_synthea, read_cdm
from harmonize.dq import CheckResult, DqReport, check_folder, check_tables
from harmonize.errors import (
    EmbeddingUnavailable,
    HarmonizeError,
    InvalidSource,
    MalformedResource,
    ReviewFileInvalid,
    SourceNotFound,
    UnmappedCode,
    VocabularyMissing,
)
from harmonize.fhir import read_fhir
from harmonize.review import accept_review, write_review
from harmonize.settings import HarmonizeSettings
from harmonize.spec import CdmSpec, load_spec
from harmonize.staging import StagedSource
from harmonize.suggest import Candidate, ConceptIndex, evaluate, labelled_terms
from harmonize.synthea import read_synthea
from harmonize.vcf import GenotypeImport, import_vcf, read_sample_sheet
from harmonize.vocabulary import CodeMapping, VocabularyStore, build_store

__all__ = [
    "Candidate",
    "CdmSpec",
    "CheckResult",
    "CodeMapping",
    "ConceptIndex",
    "DqReport",
    "EmbeddingUnavailable",
    "GenotypeImport",
    "HarmonizeError",
    "HarmonizeReport",
    "HarmonizeSettings",
    "InvalidSource",
    "MalformedResource",
    "ReviewFileInvalid",
    "SourceAccount",
    "SourceNotFound",
    "StagedSource",
    "TableCoverage",
    "UnmappedCode",
    "UnmappedCodeCount",
    "VocabularyMissing",
    "VocabularyStore",
    "accept_review",
    "build_store",
    "check_folder",
    "check_tables",
    "evaluate",
    "harmonize_fhir",
    "harmonize_synthea",
    "import_vcf",
    "labelled_terms",
    "load_spec",
    "read_cdm",
    "read_fhir",
    "read_sample_sheet",
    "read_synthea",
    "write_review",
]
