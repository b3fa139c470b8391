"""Secure aggregation end to end on Eunomia: three real in-process sites, one federation.

What the orchestrator sees of each site is masked and looks uniform, the unmasked sum is the
pooled answer exactly, small cells are suppressed only in the merged totals (at the largest
threshold), a site that drops out of the mask group never yields a wrong sum, and the GLM
fitted over masked statistics is pooled statsmodels'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import statsmodels.api as sm
import yaml
from formulaic import model_matrix
from scipy import stats

from executors import InProcessSiteTransport
from fedflow.core import digest_bytes, frequency, secagg
from flows import SiteStatus, connect, run_analysis
from flows.analyses.glm_round import GlmRound, used_columns
from flows.analyses.glm_table import derive
from flows.demo import ALL, DemoSite, build_demo, pool, pooled_answer, split_by_person
from flows.glm import fit_glm
from flows.secure import MaskGroupIncomplete
from governance.airlock import check_frequency
from governance.audit import AuditLog

pytestmark = pytest.mark.integration

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
# A cohort with small cells at every level: some small at one site but not merged, some small
# merged too.
CHARACTERIZATION = {"domain": "condition", "concept_ids": [81151], "age_band_width": 10}
CELLS = {
    "age_band": [f"{lo}-{lo + 9}" for lo in range(0, 130, 10)],
    "gender": ["female", "male", "other"],
}
TABLES: dict[str, list[str] | str] = {
    "person": ["person_id", "gender_concept_id", "year_of_birth"],
    "condition_occurrence": ["person_id", "condition_concept_id", "condition_start_date"],
    "drug_exposure": ["person_id", "drug_concept_id", "drug_exposure_start_date"],
    "observation_period": [
        "person_id",
        "observation_period_start_date",
        "observation_period_end_date",
    ],
    "concept_ancestor": "*",
}
SITES = (
    DemoSite("site-a", "EU", 0.5, 5, (*ALL, "glm_round"), tables=TABLES),
    DemoSite("site-b", "EU", 0.3, 10, (*ALL, "glm_round"), tables=TABLES),
    DemoSite("site-c", "EU", 0.2, 5, (*ALL, "glm_round"), tables=TABLES),
)
THRESHOLD = 10  # the federation's: the largest min_cell_count


@dataclass(frozen=True)
class Federation:
    profile: Path
    parts: dict[str, dict[str, pa.Table]]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, eunomia, prefect_server) -> Federation:  # type: ignore[no-untyped-def]
    """Three sites; site-c's custodian reviews every cohort count (and never decides here)."""
    parts = split_by_person(eunomia, [s.share for s in SITES], seed=11)
    profile = build_demo(tmp_path_factory.mktemp("secagg"), parts, sites=SITES)
    home = profile.parent / "sites" / "site-c"
    policy = yaml.safe_load((home / "policy.yaml").read_text())
    policy["review"] = {"analyses": ["cohort_count"]}
    (home / "policy.yaml").write_text(yaml.safe_dump(policy))
    return Federation(profile, dict(zip((s.name for s in SITES), parts, strict=True)))


def _nibble_p(words: np.ndarray) -> float:
    """Chi-square p-value of the 16 nibble values of ``words`` (uniform words: not small)."""
    nibbles = np.concatenate([(words >> np.uint64(4 * k)) & np.uint64(15) for k in range(16)])
    return float(stats.chisquare(np.bincount(nibbles.astype(np.int64), minlength=16)).pvalue)


def test_payloads_are_masked_the_sum_is_exact_and_merged_totals_are_suppressed(
    federation: Federation,
) -> None:
    pooled = pooled_answer(
        "characterization", CHARACTERIZATION, pool(list(federation.parts.values()))
    )
    with connect(federation.profile) as session:
        result = run_analysis("characterization", CHARACTERIZATION, federation=session, cells=CELLS)
        masked, plain = {}, {}
        for outcome in result.outcomes:
            transport = session.transports[outcome.site]
            assert isinstance(transport, InProcessSiteTransport) and outcome.job_id
            # what the orchestrator received (the release is kept, not made again)
            release = transport.release(outcome.job_id)
            table = release.table()
            assert table is not None and release.partial is not None
            masked[outcome.site] = table
            plain[outcome.site] = transport.node.quarantine.get(outcome.job_id).partial
            # the site audits the masked release's digest, and its receipt signs the same
            (audited,) = transport.node.audit.entries(
                request_id=result.request_id, event="airlock.released"
            )
            assert audited.details["digests"]["result"] == digest_bytes(release.partial)
            assert release.receipt is not None
            assert release.receipt.digests["result"] == digest_bytes(release.partial)
            assert audited.details["secure"] == {"group": ["site-a", "site-b", "site-c"]}
        clear = run_analysis("characterization", CHARACTERIZATION, federation=session, secure=False)

    # (1) every site's payload is masked words that look uniform and share nothing with
    # its partial; the key set is the agreed one at every site, so it says nothing.
    words = []
    for site, table in masked.items():
        assert secagg.is_masked(table)
        site_words = np.concatenate(table["count"].to_numpy(zero_copy_only=False))
        ours = secagg.fixed_cells(plain[site], CELLS)["count"].to_numpy().view(np.uint64)
        assert site_words.size == ours.size == 14 * 4
        assert not np.intersect1d(site_words, ours).size
        assert _nibble_p(ours) < 1e-20  # the plain counts are far from uniform
        words.append(site_words)
    assert _nibble_p(np.concatenate(words)) > 1e-4
    assert masked["site-a"]["age_band"].equals(masked["site-c"]["age_band"])
    # ...while the unmasked sum is the pooled table exactly.
    summed = secagg.sum_masked(list(masked.values()))
    assert summed.threshold == THRESHOLD
    assert summed.table.equals(secagg.fixed_cells(pooled, CELLS))

    # (3) no site suppressed its small cells (it released them masked)...
    assert {o.status for o in result.outcomes} == {SiteStatus.RELEASED}
    assert all(o.suppressed_cells == 0 for o in result.outcomes)
    small = {
        key
        for site, table in plain.items()
        for key, count in _cells(table).items()
        if 0 < count < {s.name: s.min_cell_count for s in SITES}[site]
    }
    merged = _cells(pooled)
    released = {k: v for k, v in _cells(result.result.to_arrow()).items() if v is not None}
    assert any(key in released and merged[key] >= THRESHOLD for key in small)
    # ...and the merged totals are suppressed at the federation's threshold, margins protected.
    strings = pa.schema([("age_band", pa.string()), ("gender", pa.string()), ("count", pa.int64())])
    expected = check_frequency(frequency.merge([pooled.cast(strings)]), threshold=THRESHOLD)
    assert expected.suppressed_cells > 0
    assert _cells(result.result.to_arrow()) == _cells(expected.table)
    # Turned off, each site suppresses its own small cells and the result has more holes.
    assert SiteStatus.SUPPRESSED in {o.status for o in clear.outcomes}
    assert clear.result["count"].null_count() > result.result["count"].null_count()


def _cells(table: pa.Table) -> dict[tuple[str, ...], Any]:
    dims = frequency.dimensions(table)
    keys = zip(*(table[d].to_pylist() for d in dims), strict=True)
    return dict(zip(keys, table[frequency.COUNT].to_pylist(), strict=True))


def test_a_site_that_drops_out_never_gives_a_wrong_sum(federation: Federation) -> None:
    # site-c passes its pre-gate and runs, then holds its count for review: it is in the mask
    # group but delivers nothing. The step runs again with site-a and site-b as a new group.
    with connect(federation.profile) as session:
        result = run_analysis("cohort_count", GI_BLEED, federation=session, review_timeout=0.3)
        with pytest.raises(MaskGroupIncomplete) as aborted:
            run_analysis(
                "cohort_count", GI_BLEED, federation=session, review_timeout=0.3, min_sites=3
            )
    by_site = {o.site: o for o in result.outcomes}
    assert by_site["site-c"].status is SiteStatus.REVIEW_PENDING
    assert result.sites_contributing == ["site-a", "site-b"]
    survivors = pool([federation.parts["site-a"], federation.parts["site-b"]])
    expected = pooled_answer("cohort_count", GI_BLEED, survivors)
    assert result.result["count"].to_list() == expected["count"].to_pylist()
    assert any("masked for secure aggregation with 2 sites" in r for r in by_site["site-a"].reasons)

    error = aborted.value
    assert error.dropped == ["site-c"] and "site-c" in error.message
    assert [o.site for o in error.outcomes if o.contributed] == ["site-a", "site-b"]

    log = AuditLog(federation.profile.parent / "orchestrator" / "audit.db", site="orchestrator")
    try:
        dropouts = [e.details for e in log.entries(event="secure.dropout")]
    finally:
        log.close()
    assert dropouts[-2:] == [
        {"dropped": ["site-c"], "delivered": ["site-a", "site-b"], "min_sites": 1},
        {"dropped": ["site-c"], "delivered": ["site-a", "site-b"], "min_sites": 3},
    ]


GLM_DATA: dict[str, Any] = {
    "variables": {
        "gi_bleed": {"domain": "condition", "concept_ids": [192671], "include_descendants": True},
        "celecoxib": {"domain": "drug", "concept_ids": [1118084], "include_descendants": True},
    }
}
FORMULA = "gi_bleed ~ age + gender + celecoxib"


def test_a_glm_over_masked_statistics_is_the_pooled_fit(federation: Federation) -> None:
    with connect(federation.profile) as session:
        fit = fit_glm(FORMULA, "binomial", data=GLM_DATA, federation=session)
    assert all(
        any("masked for secure aggregation with 3 sites" in r for r in o.reasons)
        for o in fit.outcomes
    )
    pooled = pool(list(federation.parts.values()))
    params = GlmRound().parse_params({"formula": FORMULA, "family": "binomial", "data": GLM_DATA})
    used = used_columns(params)
    frame = derive(pooled, params.data, used).dropna(subset=sorted(used))
    matrices = model_matrix(FORMULA, frame)
    oracle = sm.GLM(
        np.asarray(matrices.lhs)[:, 0], np.asarray(matrices.rhs), family=sm.families.Binomial()
    ).fit(tol=1e-14, maxiter=100)
    np.testing.assert_allclose(fit.coefficients["estimate"], oracle.params, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fit.coefficients["std_error"], oracle.bse, rtol=1e-8)
    assert fit.deviance == pytest.approx(oracle.deviance, rel=1e-10)
    # per-site contribution counts stay in the clear and add up
    assert fit.sites["site"].to_list() == ["site-a", "site-b", "site-c"]
    assert fit.sites["n"].sum() == fit.n == oracle.nobs
    assert fit.sites["cases"].sum() == int(oracle.model.endog.sum())
    assert isinstance(fit.sites, pl.DataFrame)
