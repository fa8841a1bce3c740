"""The one wall clock for stored and transmitted times: epoch milliseconds as an integer.

Integers because they compare the same on MongoDB and nx-27017 and survive AMQP headers (pamqp sends Python
floats as 32-bit floats, which loses minutes on an epoch time).
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    return int(time.time() * 1000)
