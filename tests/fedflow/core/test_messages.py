"""A request's digest: what receipts sign, kept once computed and never stale."""

from __future__ import annotations

import json
import pickle

from fedflow.core import digest_json
from fedflow.core.analysis import AnalysisRef
from fedflow.core.messages import MaskMember, MaskSpec, Request

KEY_A, KEY_B = "A" * 43 + "=", "B" * 43 + "="


def _request() -> Request:
    ref = AnalysisRef(name="cohort_count", version="1.0", code_digest="sha256:x")
    return Request(analysis=ref, params={"min_age": 40}, dataset="omop", token="t")


def test_the_digest_covers_the_whole_request_and_follows_a_changed_copy() -> None:
    request = _request()
    first = request.digest()
    assert first == digest_json(request.model_dump(mode="json")) == request.digest()
    group = MaskSpec(
        group=(MaskMember(site="a", public_key=KEY_A), MaskMember(site="b", public_key=KEY_B))
    )
    masked = request.model_copy(update={"secure": group})
    assert masked.digest() == digest_json(masked.model_dump(mode="json")) != first
    assert request.model_copy().digest() == first
    assert request == _request().model_copy(
        update={k: getattr(request, k) for k in ("request_id", "nonce", "created_at")}
    )  # equality and dumps ignore the kept digest
    assert set(request.model_dump()) == set(Request.model_fields)
    assert set(json.loads(request.model_dump_json())) == set(Request.model_fields)
    assert pickle.loads(pickle.dumps(request)).digest() == first
    assert Request.model_validate_json(request.model_dump_json()).digest() == first
