"""Compliance metadata kept next to the code that enforces it.

A module that enforces a security or privacy control declares it in a module-level
``__controls__`` tuple of :class:`Control`: which control (an id from the catalogue in
:mod:`fedflow.compliance`), how this module enforces it, and the tests that prove it
(``tests/<path>.py::<test function>``). ``fedflow compliance report`` collects them::

    __controls__ = (
        Control(
            "NIST AU-9",
            "The log is append-only and hash-chained; any edit is detected.",
            tests=("tests/governance/test_audit.py::test_an_edited_entry_is_detected",),
        ),
    )
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Control"]


@dataclass(frozen=True)
class Control:
    """One control a module enforces: the control's id, how, and the tests that prove it."""

    control: str
    mechanism: str
    tests: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.control or not self.mechanism:
            raise ValueError("a control declaration needs a control id and a mechanism")
        for test in self.tests:
            path, _, name = test.partition("::")
            if not (path.startswith("tests/") and path.endswith(".py") and name):
                raise ValueError(f"test reference {test!r} is not tests/<path>.py::<test>")
