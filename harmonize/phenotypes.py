"""A PLINK sample sheet and covariate file into the site's phenotype table (one row per person).

The phenotype table is the plain analysis table a GWAS or a GLM reads
(``{"table": "phenotype", "columns": {...}}``, :mod:`flows.analyses.glm_table`): a
``person_id`` column and numeric columns, written next to the genotype store
(:mod:`harmonize.vcf`) as ``phenotype.parquet``.

From the ``.fam`` (FID, IID, father, mother, sex, phenotype): ``female`` (sex 2 -> 1, 1 -> 0,
anything else missing) and ``case`` (phenotype 2 -> 1, 1 -> 0, anything else missing: PLINK's
case/control coding). From the covariate file (tab- or space-separated with a header whose
first column is the sample's IID, as EPACTS and PLINK ``--covar`` files are): every other
column, named in lower case (``PC1`` -> ``pc1``); ``NA`` and empty values are missing.
Person ids follow the ``.fam`` order from ``first_person_id``, as
:func:`harmonize.vcf.read_sample_sheet` numbers them, so the tables join on ``person_id``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harmonize.errors import InvalidSource, SourceNotFound
from harmonize.vcf import read_sample_sheet

__all__ = ["read_plink_phenotypes", "write_phenotypes"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_MISSING = {"", "na", "nan", "-9"}


def read_plink_phenotypes(
    fam: Path, covariates: Path | None = None, *, first_person_id: int = 1
) -> pa.Table:
    """The phenotype table of ``fam`` and an optional covariate file (see the module)."""
    persons = read_sample_sheet(fam, first_person_id=first_person_id)
    sex: dict[str, float | None] = {}
    case: dict[str, float | None] = {}
    for line in fam.read_text().splitlines():
        fields = line.split()
        if fields:
            sex[fields[1]] = {"2": 1.0, "1": 0.0}.get(fields[4])
            case[fields[1]] = {"2": 1.0, "1": 0.0}.get(fields[5])
    order = list(persons)
    columns: dict[str, list[float | None]] = {
        "female": [sex[s] for s in order],
        "case": [case[s] for s in order],
    }
    if covariates is not None:
        columns |= _covariates(covariates, order)
    return pa.table(
        {
            "person_id": pa.array([persons[s] for s in order], pa.int64()),
            **{name: pa.array(values, pa.float64()) for name, values in columns.items()},
        }
    )


def _covariates(path: Path, samples: list[str]) -> dict[str, list[float | None]]:
    if not path.is_file():
        raise SourceNotFound(f"covariate file {path} does not exist")
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise InvalidSource(f"{path}: the covariate file is empty")
    names = [name.lower() for name in lines[0][1:]]
    for name in names:
        if not _NAME.match(name) or name in {"person_id", "female", "case"}:
            raise InvalidSource(f"{path}: covariate column {name!r} is not a usable name")
    rows: dict[str, list[float | None]] = {}
    for line_no, fields in enumerate(lines[1:], start=2):
        if len(fields) != len(names) + 1:
            raise InvalidSource(f"{path} line {line_no}: expected {len(names) + 1} fields")
        values: list[float | None] = []
        for value in fields[1:]:
            if value.lower() in _MISSING:
                values.append(None)
                continue
            try:
                number = float(value)
            except ValueError:
                raise InvalidSource(f"{path} line {line_no}: a covariate is not a number") from None
            values.append(number if math.isfinite(number) else None)
        rows[fields[0]] = values
    missing = [None] * len(names)
    return {name: [rows.get(s, missing)[j] for s in samples] for j, name in enumerate(names)}


def write_phenotypes(table: pa.Table, out: Path) -> Path:
    """Write the phenotype table as ``out/phenotype.parquet``; return the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "phenotype.parquet"
    pq.write_table(table, path)
    return path
