"""Secure aggregation of additive partials: the orchestrator learns the sum, not a site's part.

Each site of a mask group (:class:`~fedflow.core.messages.MaskSpec`) holds a long-lived X25519
key. For one request, sites ``i`` and ``j`` agree on a shared secret, derive a 32-byte seed with
HKDF-SHA256 (bound to the protocol, both sites and keys, and the request's digest, so every
request gets fresh masks) and expand it with ChaCha20 (RFC 8439, a standard stream cipher used
as the PRG) into mask words ``m_ij`` over the integers mod 2^64. Site ``i`` adds
``sum_{j>i} m_ij - sum_{j<i} m_ij`` (sites ordered by name) to its encoded partial; in the sum
over the whole group every mask cancels, so the orchestrator recovers the exact total and
nothing else. A masked word is uniform on its own.

Values are encoded as integers before masking:

- integers (counts) are one word, two's complement: exact;
- reals are fixed point with :data:`FRACTION_BITS` = 64 fractional bits, ``V = round(v·2^64)``,
  split into three words ``V = w2·2^64 + w1·2^32 + w0`` with ``w0, w1 < 2^32`` and ``w2``
  signed. Each word is masked on its own; the 32 bits of headroom in ``w0`` and ``w1`` keep
  their sums free of carries for up to 2^32 sites, so the orchestrator recovers the exact sum of
  the ``V`` and rounds once when it decodes. A float64 is a dyadic rational, so any value whose
  lowest bit is at least 2^-64 is encoded exactly.

Range: a site refuses to encode a value whose magnitude is at least 2^63 / (group size), so
the sum cannot overflow (:class:`EncodingOverflow`). A masked partial is the plain table with
each additive column replaced by its masked words (``list<uint64>`` per row); everything else
(frequency keys, model identity, per-site contribution counts of a GLM round) stays as it was,
and the schema's metadata records the original schema, the masked columns, where nulls were
(structure, not values), the group and the site's ``min_cell_count``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise, product
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field

from fedflow.core import frequency
from fedflow.core.analysis import OutputKind
from fedflow.core.digest import canonical_json
from fedflow.core.errors import FedflowError
from fedflow.core.messages import MaskSpec

__all__ = [
    "FRACTION_BITS",
    "MASKABLE",
    "MAX_CELLS",
    "PROTOCOL",
    "CellsNotAgreed",
    "EncodingOverflow",
    "Exchange",
    "FixedCells",
    "MaskedPartialsDisagree",
    "MaskedSum",
    "SecureAggregationError",
    "SecureAggregationPolicy",
    "decode_reals",
    "encode_reals",
    "exchange_with",
    "fixed_cells",
    "group_mask",
    "is_masked",
    "mask_table",
    "masked_columns",
    "pair_seed",
    "prg_words",
    "public_key_text",
    "sum_masked",
]

PROTOCOL = "fedflow-secagg/1"
FRACTION_BITS = 64
MASKABLE = frozenset({OutputKind.FREQUENCY, OutputKind.REGRESSION})
"""Output kinds whose partials add up, and which :func:`mask_table` can mask."""
MAX_CELLS = 200_000
"""The largest agreed key set a site masks (every combination of levels and margins)."""
METADATA_KEY = b"fedflow.secagg"
_LIMB = (1 << 32) - 1
_WORD = (1 << 64) - 1
_INT, _REAL = "int", "real"
_WORDS = {_INT: 1, _REAL: 3}
# Columns that identify what is summed (equal at every site), and the contribution counts a
# GLM round keeps in the clear: the flow reports them per site, and the site's airlock checked
# them against its threshold. Everything else is masked.
_KEYS = {OutputKind.REGRESSION: ("family", "columns")}
_COUNTS = {OutputKind.REGRESSION: ("n", "y_zero", "y_one")}


class SecureAggregationError(FedflowError):
    """A partial cannot be masked, or masked partials cannot be summed."""


class EncodingOverflow(SecureAggregationError):
    """A value is too large (or not finite) to be encoded without overflowing the sum."""


class CellsNotAgreed(SecureAggregationError):
    """A frequency table does not fit the key set agreed for the step."""


class MaskedPartialsDisagree(SecureAggregationError):
    """Masked partials are not of one step: groups, keys, structure or members differ."""


class SecureAggregationPolicy(BaseModel):
    """A site policy's ``secure_aggregation`` section.

    ``required``: never release an additive output unmasked (a step the orchestrator runs
    without a mask group, e.g. with ``secure=False`` or over one site, is refused).
    ``min_group``: the smallest mask group the site masks for (at least 2).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    required: bool = False
    min_group: int = Field(default=2, ge=2, le=1000)


@runtime_checkable
class FixedCells(Protocol):
    """An analysis whose frequency table has a key set known before it runs.

    ``cell_levels`` returns the levels of each dimension (``{}``: one count, no dimension);
    the orchestrator sends them with the mask group, so the key set reveals nothing.
    """

    def cell_levels(self, params: Any) -> Mapping[str, Sequence[str]]: ...


# -- key agreement and masks ----------------------------------------------------------------


def public_key_text(key: X25519PrivateKey | X25519PublicKey) -> str:
    """The raw X25519 public key as base64 (what sites publish and mask groups carry)."""
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


Exchange = Callable[[str], bytes]
"""A site's X25519 exchange with a peer's published key (base64): the raw shared secret."""


def exchange_with(private_key: X25519PrivateKey) -> Exchange:
    """The plain :data:`Exchange` of ``private_key`` (a site may cache its results)."""

    def exchange(peer_public_key: str) -> bytes:
        peer = X25519PublicKey.from_public_bytes(base64.b64decode(peer_public_key, validate=True))
        return private_key.exchange(peer)

    return exchange


def pair_seed(
    private_key: X25519PrivateKey, site: str, peer: str, spec: MaskSpec, context: str
) -> bytes:
    """The 32-byte seed ``site`` and ``peer`` share for ``context`` (X25519, then HKDF)."""
    keys = _group_keys(private_key, site, spec)
    return _pair_seed(exchange_with(private_key), keys, site, peer, context)


def _group_keys(private_key: X25519PrivateKey, site: str, spec: MaskSpec) -> dict[str, str]:
    """The group's published keys by site, once checked to carry ``site``'s own key."""
    keys = {m.site: m.public_key for m in spec.group}
    if keys.get(site) != public_key_text(private_key):
        raise MaskedPartialsDisagree(
            "the mask group does not carry this site's key-agreement key", site=site
        )
    return keys


def _pair_seed(
    exchange: Exchange, keys: Mapping[str, str], site: str, peer: str, context: str
) -> bytes:
    try:
        shared = exchange(keys[peer])
    except (KeyError, ValueError) as exc:
        raise MaskedPartialsDisagree(
            f"cannot agree a key with site {peer}: {type(exc).__name__}", site=site
        ) from None
    first, second = sorted((site, peer))
    info = canonical_json(
        {
            "protocol": PROTOCOL,
            "context": context,
            "sites": [first, second],
            "keys": [keys[first], keys[second]],
        }
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def prg_words(seed: bytes, count: int) -> np.ndarray:
    """``count`` pseudo-random words (uint64): the ChaCha20 keystream of ``seed``."""
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * count)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64)


def group_mask(
    private_key: X25519PrivateKey,
    site: str,
    spec: MaskSpec,
    context: str,
    count: int,
    *,
    exchange: Exchange | None = None,
) -> np.ndarray:
    """Site ``site``'s mask: ``sum_{j>i} m_ij - sum_{j<i} m_ij`` mod 2^64, ``count`` words.

    ``exchange``: how the site gets its shared secret with a peer's key (default: X25519 with
    ``private_key`` every time; a site keeps them, as the pairs' keys are long-lived).
    """
    sites = spec.sites
    if site not in sites:
        raise MaskedPartialsDisagree("this site is not in the mask group", site=site)
    keys = _group_keys(private_key, site, spec)
    exchange = exchange or exchange_with(private_key)
    total = np.zeros(count, dtype=np.uint64)
    for peer in sites:
        if peer == site:
            continue
        words = prg_words(_pair_seed(exchange, keys, site, peer, context), count)
        total = total + words if site < peer else total - words  # uint64 wraps mod 2^64
    return total


# -- fixed-point encoding -------------------------------------------------------------------


def encode_reals(values: Sequence[float] | np.ndarray, group_size: int) -> np.ndarray:
    """Three words per value (see the module docstring), as one flat uint64 array.

    Vectorised and exact: ``|v| = whole + frac`` splits exactly in float64, ``frac·2^64`` is
    exact, and one rounding (to nearest, ties to even) gives the low 64 bits; a negative value
    is then negated in two's complement across the words.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    bound = 2.0**63 / group_size
    if v.size and not (np.all(np.isfinite(v)) and float(np.max(np.abs(v))) < bound):
        raise EncodingOverflow(
            f"a value is not finite or at least 2^63/{group_size} in magnitude: it cannot "
            "be summed securely"
        )
    magnitude = np.abs(v)
    whole = np.floor(magnitude)
    frac = np.rint(np.ldexp(magnitude - whole, FRACTION_BITS))
    carry = frac >= 2.0**64
    whole = whole + carry
    low = np.where(carry, 0.0, frac).astype(np.uint64)
    high = whole.astype(np.int64)
    negative = v < 0
    borrow = (negative & (low != 0)).astype(np.int64)
    low = np.where(negative, np.uint64(0) - low, low)
    high = np.where(negative, -high - borrow, high)
    out = np.empty((v.size, 3), dtype=np.uint64)
    out[:, 0] = low & np.uint64(_LIMB)
    out[:, 1] = low >> np.uint64(32)
    out[:, 2] = high.view(np.uint64)
    return out.ravel()


def decode_reals(words: np.ndarray) -> list[float]:
    """The sums encoded in summed words (three per value), each rounded once to a float."""
    limbs = words.reshape(-1, 3)
    low, mid = limbs[:, 0].tolist(), limbs[:, 1].tolist()
    high = limbs[:, 2].view(np.int64).tolist()
    return [
        ((h << 64) + (m << 32) + lo) / (1 << FRACTION_BITS)
        for lo, m, h in zip(low, mid, high, strict=True)
    ]


def _encode_ints(values: Sequence[int], group_size: int) -> np.ndarray:
    bound = (1 << 63) // group_size
    if any(abs(v) >= bound for v in values):
        raise EncodingOverflow(f"a count is at least 2^63/{group_size}: it cannot be summed")
    return np.asarray(values, dtype=np.int64).view(np.uint64)


# -- frequency tables on an agreed key set ----------------------------------------------------


def fixed_cells(table: pa.Table, levels: Mapping[str, Sequence[str]]) -> pa.Table:
    """``table`` on the agreed key set: every combination of levels and margins, in order.

    Cells the site lacks are zero. A non-zero (or suppressed) cell outside the key set is an
    error, never dropped: dropping it would make the sum wrong.
    """
    dims = frequency.dimensions(table)
    if set(dims) != set(levels):
        raise CellsNotAgreed("the table's dimensions are not those of the agreed key set")
    for dim in dims:
        values = list(levels[dim])
        if len(set(values)) != len(values) or frequency.MARGIN in values:
            raise CellsNotAgreed(f"the levels of {dim} must be distinct and not the margin")
    if math.prod(len(levels[d]) + 1 for d in dims) > MAX_CELLS:
        raise CellsNotAgreed(f"the agreed key set has more than {MAX_CELLS} cells")
    counts: list[int | None] = table[frequency.COUNT].to_pylist()
    keys = list(zip(*(table[d].to_pylist() for d in dims), strict=True)) if dims else [()]
    if not dims and table.num_rows != 1:
        raise CellsNotAgreed("a frequency table without dimensions holds exactly one count")
    have = dict(zip(keys, counts, strict=True))
    grid = list(product(*([*levels[d], frequency.MARGIN] for d in dims)))
    known = set(grid)
    if any(c is None for c in counts) or any(k not in known and c for k, c in have.items()):
        raise CellsNotAgreed("the table has a suppressed cell or a count outside the agreed cells")
    columns: dict[str, Any] = {
        d: pa.array([key[j] for key in grid], pa.string()) for j, d in enumerate(dims)
    }
    columns[frequency.COUNT] = pa.array([have.get(key, 0) for key in grid], pa.int64())
    return pa.table(columns)


# -- masking and summing tables ---------------------------------------------------------------


def masked_columns(kind: OutputKind | str, table: pa.Table) -> dict[str, str]:
    """The columns of ``kind``'s partial that are masked, with their encoding (int or real)."""
    kind = OutputKind(kind)
    if kind not in MASKABLE:
        raise SecureAggregationError(f"output kind {kind.value} is not additive")
    if kind is OutputKind.FREQUENCY:
        names = [frequency.COUNT]
    else:
        clear = set(_KEYS[kind]) | set(_counts(kind, table))
        names = [c for c in table.column_names if c not in clear]
    out = {}
    for name in names:
        kind_type = table.schema.field(name).type
        value_type = kind_type.value_type if pa.types.is_list(kind_type) else kind_type
        if pa.types.is_integer(value_type):
            out[name] = _INT
        elif pa.types.is_floating(value_type):
            out[name] = _REAL
        else:
            raise SecureAggregationError(f"column {name} is not numeric and cannot be summed")
    return out


def _counts(kind: OutputKind, table: pa.Table) -> list[str]:
    """The contribution counts ``kind`` keeps in the clear (summed in the clear)."""
    counts = list(_COUNTS.get(kind, ()))
    if kind is OutputKind.REGRESSION and table["family"].to_pylist() != ["gaussian"]:
        counts.append("y_sum")  # events (Poisson) or cases (binomial)
    return counts


def mask_table(
    table: pa.Table,
    kind: OutputKind | str,
    *,
    private_key: X25519PrivateKey,
    site: str,
    spec: MaskSpec,
    context: str,
    threshold: int,
    exchange: Exchange | None = None,
) -> pa.Table:
    """``table`` (a plain partial of ``kind``) masked for ``spec``'s group under ``context``.

    ``exchange``: as in :func:`group_mask`.
    """
    if OutputKind(kind) is OutputKind.FREQUENCY:
        table = fixed_cells(table, spec.cells or {})
    encodings = masked_columns(kind, table)
    size = len(spec.group)
    pieces, counts, nulls = [], [], {}
    for name, encoding in encodings.items():
        values, lengths, missing = _flatten(table[name])
        zeroed = [0 if v is None else v for v in values]
        words = _encode_ints(zeroed, size) if encoding == _INT else encode_reals(zeroed, size)
        pieces.append(words)
        counts.append([n * _WORDS[encoding] for n in lengths])
        nulls[name] = {"kind": encoding, "nulls": missing}
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.uint64)
    flat = flat + group_mask(private_key, site, spec, context, flat.size, exchange=exchange)
    columns, start = {}, 0
    for name, per_row in zip(encodings, counts, strict=True):
        rows = []
        for n in per_row:
            rows.append(flat[start : start + n])
            start += n
        columns[name] = pa.array(rows, pa.list_(pa.uint64()))
    masked = pa.table({c: columns.get(c, table[c]) for c in table.column_names})
    meta = {
        "protocol": PROTOCOL,
        "kind": OutputKind(kind).value,
        "schema": base64.b64encode(table.schema.serialize().to_pybytes()).decode(),
        "columns": nulls,
        "counts": _counts(OutputKind(kind), table),
        "site": site,
        "group": spec.sites,
        "context": context,
        "threshold": threshold,
    }
    return masked.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})


def is_masked(table: pa.Table) -> bool:
    """Whether ``table`` is a masked partial (from :func:`mask_table`)."""
    return METADATA_KEY in (table.schema.metadata or {})


@dataclass(frozen=True)
class MaskedSum:
    """The unmasked sum of a group's masked partials, and what the group said about it."""

    table: pa.Table
    """The summed partial, in the plain partial's schema."""
    kind: OutputKind
    sites: tuple[str, ...]
    threshold: int
    """The federation's threshold: the largest ``min_cell_count`` of the group's sites."""


def sum_masked(tables: Sequence[pa.Table]) -> MaskedSum:
    """Sum the masked partials of every member of one group; the masks cancel.

    Raises :class:`MaskedPartialsDisagree` unless exactly the group's sites delivered one
    partial each, for the same context and structure: a missing member would leave its masks
    in the sum, and the answer would be wrong.
    """
    if not tables:
        raise MaskedPartialsDisagree("nothing to sum: no masked partials")
    metas = [_metadata(t) for t in tables]
    first = metas[0]
    same = ("protocol", "kind", "schema", "group", "context", "counts")
    if any(any(m[k] != first[k] for k in same) for m in metas):
        raise MaskedPartialsDisagree("the masked partials are not of one step and one group")
    delivered = sorted(m["site"] for m in metas)
    if delivered != first["group"]:
        missing = sorted(set(first["group"]) - set(delivered))
        raise MaskedPartialsDisagree(
            "the masks cancel only over the whole group; missing: "
            + (", ".join(missing) or "none")
            + (" (a site delivered twice)" if len(delivered) != len(set(delivered)) else "")
        )
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(first["schema"])))
    encodings = {name: spec["kind"] for name, spec in first["columns"].items()}
    counts = first["counts"]
    keys = [c for c in schema.names if c not in encodings and c not in counts]
    for table in tables[1:]:
        if any(not table[c].equals(tables[0][c]) for c in keys):
            raise MaskedPartialsDisagree("the masked partials differ in their key columns")
    columns: dict[str, Any] = {c: tables[0][c] for c in keys}
    for name in counts:  # contribution counts, in the clear: summed as they are
        field_type = schema.field(name).type
        per_site = zip(*(t[name].to_pylist() for t in tables), strict=True)
        add = math.fsum if pa.types.is_floating(field_type) else sum
        columns[name] = pa.array([add(r) for r in per_site], field_type)
    for name, encoding in encodings.items():
        offsets = [_combined(t[name]) for t in tables]
        if any(not np.array_equal(o[0], offsets[0][0]) for o in offsets):
            raise MaskedPartialsDisagree(f"the masked partials differ in the shape of {name}")
        total = offsets[0][1].copy()
        for _, words in offsets[1:]:
            total += words  # mod 2^64
        values: list[Any] = (
            total.view(np.int64).tolist() if encoding == _INT else decode_reals(total)
        )
        for m in metas:
            for index in m["columns"][name]["nulls"]:
                values[index] = None
        bounds = (offsets[0][0] // _WORDS[encoding]).tolist()
        field_type = schema.field(name).type
        if pa.types.is_list(field_type):
            columns[name] = pa.array([values[a:b] for a, b in pairwise(bounds)], field_type)
        else:
            columns[name] = pa.array(values, field_type)
    table = pa.table({c: columns[c] for c in schema.names}, schema=schema.remove_metadata())
    return MaskedSum(
        table,
        OutputKind(first["kind"]),
        tuple(delivered),
        max(int(m["threshold"]) for m in metas),
    )


def _metadata(table: pa.Table) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise MaskedPartialsDisagree("a partial is not masked")
    meta: dict[str, Any] = json.loads(raw)
    return meta


def _flatten(column: pa.ChunkedArray) -> tuple[list[Any], list[int], list[int]]:
    """A column's values in row order, each row's number of values, the flat null indices."""
    rows = column.to_pylist()
    values: list[Any] = []
    lengths: list[int] = []
    for row in rows:
        items = row if isinstance(row, list) else [row]
        values.extend(items)
        lengths.append(len(items))
    return values, lengths, [i for i, v in enumerate(values) if v is None]


def _combined(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A masked column's row offsets (in words) and its words, flat."""
    array = column.combine_chunks()
    offsets = np.asarray(array.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    offsets = offsets - offsets[0]
    words = np.asarray(pc.list_flatten(array).to_numpy(zero_copy_only=False), dtype=np.uint64)
    return offsets, words
