"""The analysis registry and the analysis contract's provided parts."""

from __future__ import annotations

import pytest

from fedflow.core import ConfigError, InvalidParameters, UnknownAnalysis
from fedflow.core.registry import AnalysisRegistry, default_registry
from flows.analyses.cohort_count import CohortCount


def test_library_analyses_are_registered_through_entry_points() -> None:
    names = {cls.ref().name for cls in default_registry()}
    assert {"cohort_count", "characterization", "numeric_summary"} <= names


def test_unknown_names_and_versions_are_clear_errors() -> None:
    registry = AnalysisRegistry((CohortCount,))
    with pytest.raises(UnknownAnalysis, match="unknown analysis 'nope' \\(known: cohort_count\\)"):
        registry.get("nope")
    with pytest.raises(UnknownAnalysis, match=r"no version '9\.9'"):
        registry.get("cohort_count", "9.9")
    assert isinstance(registry.get("cohort_count"), CohortCount)


def test_a_clashing_or_incomplete_analysis_is_refused() -> None:
    class Other(CohortCount):
        """Same name and version, different code."""

        def finalize(self, partial, params):  # type: ignore[no-untyped-def]
            return partial

    registry = AnalysisRegistry((CohortCount,))
    assert Other.ref().code_digest != CohortCount.ref().code_digest
    with pytest.raises(ConfigError, match="already registered"):
        registry.add(Other)

    class Bad(CohortCount):
        version = "not a version"

    with pytest.raises(ConfigError, match="invalid version"):
        registry.add(Bad)


def test_code_digest_covers_the_analysis_and_its_bases() -> None:
    import inspect

    import flows.analyses.cohort as cohort
    import flows.analyses.cohort_count as cohort_count
    from fedflow.core import digest_bytes

    expected = "\n".join(
        f"# module {m.__name__}\n{inspect.getsource(m)}" for m in (cohort_count, cohort)
    )
    assert CohortCount.ref().code_digest == digest_bytes(expected.encode())


def test_parameter_errors_name_fields_and_never_echo_values() -> None:
    analysis = CohortCount()
    with pytest.raises(InvalidParameters) as raised:
        analysis.parse_params(
            {"domain": "nowhere-9876", "concept_ids": [], "min_age": 50, "max_age": 10}
        )
    message = str(raised.value)
    assert "domain" in message and "concept_ids" in message
    assert "nowhere-9876" not in message
    with pytest.raises(InvalidParameters, match="min_age is greater than max_age"):
        analysis.parse_params(
            {"domain": "condition", "concept_ids": [1], "min_age": 50, "max_age": 10}
        )
    with pytest.raises(InvalidParameters, match="JSON object"):
        analysis.parse_params(["not", "a", "mapping"])  # type: ignore[arg-type]
