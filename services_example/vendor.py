"""Stand-ins for the vendors the example service calls (a bank API, an FX quote provider)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Charge:
    charge_id: str
    bank_code: str
    amount: int


class FakeBank:
    """Always succeeds: the breaker, not the vendor, decides whether the call is made."""

    def __init__(self) -> None:
        self.calls = 0

    def charge(self, bank_code: str, amount: int) -> Charge:
        self.calls += 1
        return Charge(f"ch_{uuid.uuid4().hex[:16]}", bank_code, amount)


class FakeFxQuotes:
    def __init__(self) -> None:
        self.calls = 0

    def quote(self, base: str, quote: str) -> float:
        self.calls += 1
        return 151.25 if (base, quote) == ("USD", "JPY") else 1.0
