"""What a forger with write access to a site's disk does to its audit log, for the tests."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from governance.audit import GENESIS, AuditEntry, AuditLog

__all__ = ["rewrite_log"]


def rewrite_log(source: Path, target: Path, *, alter_seq: int, change: Mapping[str, Any]) -> None:
    """Re-chain every entry of ``source`` into ``target``, with ``change`` merged into the details
    of entry ``alter_seq``.

    Times and every other entry stay as they were, and every hash is recomputed: the best
    forgery, a chain that verifies on its own.
    """
    with AuditLog(source, site="") as log:
        entries = log.entries()
    with AuditLog(target, site=""):
        pass
    con = sqlite3.connect(target)
    prev = GENESIS
    for e in entries:
        details = {**e.details, **change} if e.seq == alter_seq else e.details
        fields = {**asdict(e), "details": details, "prev_hash": prev, "hash": ""}
        sealed = AuditEntry(**{**fields, "hash": AuditEntry(**fields).expected_hash()})
        row = asdict(sealed)
        row["details"] = json.dumps(row["details"])
        con.execute(
            f"INSERT INTO audit ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        prev = sealed.hash
    con.commit()
    con.close()
