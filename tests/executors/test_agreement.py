"""The site's key-agreement key and its secure-aggregation rules."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from executors.agreement import AgreementKey, AgreementKeyInvalid, secure_refusal
from fedflow.core import OutputKind, secagg
from fedflow.core.analysis import AnalysisRef
from fedflow.core.messages import MaskMember, MaskSpec, Request
from fedflow.core.secagg import SecureAggregationPolicy


def test_the_key_is_made_once_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agreement.key.pem"
    made = AgreementKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = AgreementKey.load_or_create(path)
    assert again.public_text == made.public_text and len(made.public_text) == 44
    path.write_bytes(b"not a key")
    with pytest.raises(AgreementKeyInvalid, match="cannot read"):
        AgreementKey.load_or_create(path)


def _request(secure: MaskSpec | None) -> Request:
    ref = AnalysisRef(name="cohort_count", version="1.0", code_digest="sha256:x")
    return Request(analysis=ref, dataset="omop", token="t", secure=secure)


def test_a_site_masks_only_for_a_group_that_names_it_and_is_large_enough(tmp_path: Path) -> None:
    key = AgreementKey.load_or_create(tmp_path / "k.pem")
    other = secagg.public_key_text(X25519PrivateKey.generate())
    third = secagg.public_key_text(X25519PrivateKey.generate())
    pair = MaskSpec(
        group=(
            MaskMember(site="a", public_key=key.public_text),
            MaskMember(site="b", public_key=other),
        )
    )
    default = SecureAggregationPolicy()

    def refusal(request: Request, kind: OutputKind, policy: SecureAggregationPolicy) -> str | None:
        return secure_refusal(request, kind, site="a", key=key, policy=policy)

    assert refusal(_request(pair), OutputKind.FREQUENCY, default) is None
    assert refusal(_request(None), OutputKind.FREQUENCY, default) is None
    impostor = pair.model_copy(
        update={"group": (MaskMember(site="a", public_key=third), pair.group[1])}
    )
    assert "does not name this site" in str(
        refusal(_request(impostor), OutputKind.REGRESSION, default)
    )
    assert "not additive" in str(refusal(_request(pair), OutputKind.SUMMARY, default))
    larger = SecureAggregationPolicy(min_group=3)
    assert "at least 3" in str(refusal(_request(pair), OutputKind.FREQUENCY, larger))
    required = SecureAggregationPolicy(required=True)
    assert "requires secure aggregation" in str(
        refusal(_request(None), OutputKind.REGRESSION, required)
    )
    assert refusal(_request(None), OutputKind.SURVIVAL, required) is None  # not additive


def test_a_mask_group_is_sorted_distinct_and_at_least_two() -> None:
    keys = [secagg.public_key_text(X25519PrivateKey.generate()) for _ in range(2)]
    with pytest.raises(ValueError, match="sorted"):
        MaskSpec(
            group=(
                MaskMember(site="b", public_key=keys[0]),
                MaskMember(site="a", public_key=keys[1]),
            )
        )
    with pytest.raises(ValueError):
        MaskSpec(group=(MaskMember(site="a", public_key=keys[0]),))


def test_the_site_policy_carries_the_section_and_validates_it() -> None:
    from governance.errors import PolicyInvalid
    from governance.policy import SitePolicy

    assert SitePolicy.parse({}).secure_aggregation == SecureAggregationPolicy()
    policy = SitePolicy.parse({"secure_aggregation": {"required": True, "min_group": 3}})
    assert policy.secure_aggregation == SecureAggregationPolicy(required=True, min_group=3)
    with pytest.raises(PolicyInvalid, match=r"secure_aggregation\.min_group"):
        SitePolicy.parse({"secure_aggregation": {"min_group": 1}})


def test_kept_shared_secrets_give_the_same_masks_and_stay_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = AgreementKey.load_or_create(tmp_path / "k.pem")
    peers = {f"p{i}": X25519PrivateKey.generate() for i in range(3)}
    spec = MaskSpec(
        group=(
            MaskMember(site="a", public_key=key.public_text),
            *(MaskMember(site=s, public_key=secagg.public_key_text(k)) for s, k in peers.items()),
        )
    )
    plain = secagg.group_mask(key.private_key, "a", spec, "ctx", 16)
    kept = secagg.group_mask(key.private_key, "a", spec, "ctx", 16, exchange=key.shared_secret)
    assert np.array_equal(plain, kept)
    for peer in peers.values():  # the pair's secret, as the peer computes it
        mine = key.shared_secret(secagg.public_key_text(peer))
        assert mine == peer.exchange(key.private_key.public_key())
    again = secagg.group_mask(key.private_key, "a", spec, "other", 16, exchange=key.shared_secret)
    assert not np.array_equal(kept, again)  # fresh masks per context from the kept secrets
    monkeypatch.setattr("executors.agreement.KEPT_SECRETS", 2)
    key.shared_secret(secagg.public_key_text(X25519PrivateKey.generate()))
    assert len(key._secrets) == 2
