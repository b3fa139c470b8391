"""Secure aggregation maths: masks cancel, encodings are exact, wrong sums are refused."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from scipy import stats

from fedflow.core import OutputKind, regression, secagg
from fedflow.core.messages import MaskMember, MaskSpec

SITES = ("alpha", "bravo", "charlie", "delta")


def _group(
    sites: tuple[str, ...] = SITES, cells: dict[str, tuple[str, ...]] | None = None
) -> tuple[dict[str, X25519PrivateKey], MaskSpec]:
    keys = {s: X25519PrivateKey.generate() for s in sites}
    members = tuple(MaskMember(site=s, public_key=secagg.public_key_text(keys[s])) for s in sites)
    return keys, MaskSpec(group=members, cells=cells)


def _mask(table, kind, keys, spec, site, context="request-digest", threshold=5):  # type: ignore[no-untyped-def]
    return secagg.mask_table(
        table,
        kind,
        private_key=keys[site],
        site=site,
        spec=spec,
        context=context,
        threshold=threshold,
    )


def test_pairwise_masks_cancel_over_the_group_and_only_over_it() -> None:
    keys, spec = _group()
    masks = [secagg.group_mask(keys[s], s, spec, "ctx", 1000) for s in SITES]
    total = np.zeros(1000, np.uint64)
    for mask in masks:
        total += mask
    assert not total.any()  # sum_{j>i} m_ij - sum_{j<i} m_ij cancels mod 2^64
    partial = masks[0] + masks[1] + masks[2]  # a member missing: its masks stay in
    assert np.count_nonzero(partial) == 1000


def test_seeds_are_shared_by_the_pair_and_fresh_per_context() -> None:
    keys, spec = _group()
    ab = secagg.pair_seed(keys["alpha"], "alpha", "bravo", spec, "ctx")
    assert ab == secagg.pair_seed(keys["bravo"], "bravo", "alpha", spec, "ctx")
    assert ab != secagg.pair_seed(keys["alpha"], "alpha", "bravo", spec, "other request")
    assert ab != secagg.pair_seed(keys["alpha"], "alpha", "charlie", spec, "ctx")
    words = secagg.prg_words(ab, 64)
    assert words.dtype == np.uint64 and len(set(words.tolist())) == 64
    assert np.array_equal(words[:8], secagg.prg_words(ab, 8))  # a keystream prefix


def test_a_site_masks_only_with_its_own_key_in_the_group() -> None:
    keys, spec = _group()
    stranger = X25519PrivateKey.generate()
    with pytest.raises(secagg.MaskedPartialsDisagree, match="key-agreement key"):
        secagg.group_mask(stranger, "alpha", spec, "ctx", 4)
    with pytest.raises(secagg.MaskedPartialsDisagree, match="not in the mask group"):
        secagg.group_mask(keys["alpha"], "echo", spec, "ctx", 4)


def test_fixed_point_sums_are_exact_to_one_rounding() -> None:
    # Every float here is a multiple of 2^-64, so its encoding is exact and the decoded sum
    # is the exact sum rounded once: what math.fsum computes.
    rng = random.Random(7)
    for _ in range(200):
        sites = [
            [rng.choice((-1, 1)) * rng.uniform(1e-3, 1e12) for _ in range(3)] for _ in range(5)
        ]
        total = np.zeros(9, np.uint64)
        for values in sites:
            total += secagg.encode_reals(values, 5)
        decoded = secagg.decode_reals(total)
        assert decoded == [math.fsum(column) for column in zip(*sites, strict=True)]


def test_values_that_could_overflow_the_sum_are_refused() -> None:
    assert secagg.decode_reals(secagg.encode_reals([2.0**62 - 2**20], 1)) == [2.0**62 - 2**20]
    with pytest.raises(secagg.EncodingOverflow):
        secagg.encode_reals([2.0**62], 2)
    with pytest.raises(secagg.EncodingOverflow):
        secagg.encode_reals([math.nan], 2)
    keys, spec = _group(("a", "b"), cells={})
    big = pa.table({"count": pa.array([2**62], pa.int64())})
    with pytest.raises(secagg.EncodingOverflow):
        _mask(big, OutputKind.FREQUENCY, keys, spec, "a")


def _regression_partials(seed: int) -> list[pa.Table]:
    rng = np.random.default_rng(seed)
    out = []
    for n in (40, 25, 60, 13):
        x = np.column_stack([np.ones(n), rng.normal(50, 12, n), rng.integers(0, 2, n)])
        y = rng.integers(0, 2, n).astype(float)
        w = rng.uniform(0.1, 0.25, n)
        out.append(
            regression.from_arrays(
                "binomial",
                ["Intercept", "age", "exposed"],
                x=x,
                y=y,
                weights=np.ones(n),
                working_weights=w,
                working_response=rng.normal(0, 2, n),
                deviance=float(rng.uniform(10, 90)),
                loglik=float(-rng.uniform(5, 45)),
            )
        )
    return out


def test_regression_statistics_sum_securely_to_the_plain_merge() -> None:
    keys, spec = _group()
    plain = _regression_partials(3)
    masked = [
        _mask(t, OutputKind.REGRESSION, keys, spec, s, threshold=t0)
        for s, t, t0 in zip(SITES, plain, (5, 10, 3, 8), strict=True)
    ]
    for ours, theirs in zip(masked, plain, strict=True):
        assert secagg.is_masked(ours) and not secagg.is_masked(theirs)
        # contribution counts stay in the clear; the statistics do not
        for column in ("family", "columns", "n", "y_zero", "y_one", "y_sum"):
            assert ours[column].equals(theirs[column])
        assert pa.types.is_list(ours.schema.field("xtwx").type)
        assert ours["xtwx"].type.value_type == pa.uint64()
    summed = secagg.sum_masked(list(reversed(masked)))
    assert summed.kind is OutputKind.REGRESSION and summed.threshold == 10
    assert summed.sites == SITES
    expected = regression.merge(plain).to_pylist()[0]
    got = summed.table.to_pylist()[0]
    assert summed.table.schema.equals(regression.SCHEMA)
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-14), key
        elif key in ("xtwx", "xtwz"):
            np.testing.assert_allclose(got[key], value, rtol=1e-14)
        else:
            assert got[key] == value, key  # integers and nulls exactly
    assert got["indicator_ones"][1] is None  # "age" is not 0/1 anywhere


def test_a_sum_without_every_member_is_refused() -> None:
    keys, spec = _group()
    plain = _regression_partials(4)
    masked = [
        _mask(t, OutputKind.REGRESSION, keys, spec, s) for s, t in zip(SITES, plain, strict=True)
    ]
    with pytest.raises(secagg.MaskedPartialsDisagree, match="missing: charlie"):
        secagg.sum_masked([masked[0], masked[1], masked[3]])
    other = _mask(plain[3], OutputKind.REGRESSION, keys, spec, "delta", context="another")
    with pytest.raises(secagg.MaskedPartialsDisagree, match="not of one step"):
        secagg.sum_masked([*masked[:3], other])
    with pytest.raises(secagg.MaskedPartialsDisagree, match="not masked"):
        secagg.sum_masked([*masked[:3], plain[3]])


def test_frequency_tables_are_masked_on_the_agreed_key_set() -> None:
    cells = {"band": ("0-9", "10-19"), "sex": ("female", "male")}
    keys, spec = _group(("a", "b"), cells=cells)
    site_a = pa.table(
        {
            "band": ["0-9", "0-9", "*", "*"],
            "sex": ["female", "*", "female", "*"],
            "count": pa.array([2, 2, 2, 2], pa.int64()),
        }
    )
    on_grid = secagg.fixed_cells(site_a, cells)
    assert on_grid.num_rows == 9 and sum(on_grid["count"].to_pylist()) == 8
    site_b = pa.table({"band": ["*"], "sex": ["*"], "count": pa.array([0], pa.int64())})
    masked = [
        _mask(site_a, OutputKind.FREQUENCY, keys, spec, "a"),
        _mask(site_b, OutputKind.FREQUENCY, keys, spec, "b"),
    ]
    assert masked[0]["band"].equals(masked[1]["band"])  # the key set says nothing of the data
    summed = secagg.sum_masked(masked).table
    assert summed.equals(on_grid)

    outside = site_a.set_column(0, "band", pa.array(["90-99", "90-99", "*", "*"]))
    with pytest.raises(secagg.CellsNotAgreed):
        secagg.fixed_cells(outside, cells)
    with pytest.raises(secagg.CellsNotAgreed):
        secagg.fixed_cells(site_a, {"band": ("0-9",)})
    huge = {"band": tuple(str(i) for i in range(1000)), "sex": tuple(str(i) for i in range(200))}
    with pytest.raises(secagg.CellsNotAgreed, match="more than"):
        secagg.fixed_cells(site_a, huge)
    suppressed = site_a.set_column(2, "count", pa.array([None, 2, 2, 2], pa.int64()))
    with pytest.raises(secagg.CellsNotAgreed):
        secagg.fixed_cells(suppressed, cells)


def test_masked_words_are_uniform_and_plain_words_are_not() -> None:
    levels = tuple(str(i) for i in range(255))
    keys, spec = _group(("a", "b", "c"), cells={"cell": levels})
    plain = pa.table(
        {"cell": [*levels, "*"], "count": pa.array([*range(1, 256), 255 * 128], pa.int64())}
    )
    masked = _mask(plain, OutputKind.FREQUENCY, keys, spec, "b")
    words = np.concatenate(masked["count"].to_numpy(zero_copy_only=False))

    def nibble_p(values: np.ndarray) -> float:
        nibbles = np.concatenate([(values >> np.uint64(4 * k)) & np.uint64(15) for k in range(16)])
        return float(stats.chisquare(np.bincount(nibbles.astype(np.int64), minlength=16)).pvalue)

    assert nibble_p(words) > 1e-4
    assert nibble_p(plain["count"].to_numpy().view(np.uint64)) < 1e-100
    assert not np.intersect1d(words, plain["count"].to_numpy().view(np.uint64)).size
