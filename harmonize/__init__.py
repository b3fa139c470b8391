"""Harmonization of raw extracts, FHIR and VCF into OMOP CDM."""
