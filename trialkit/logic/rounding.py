"""REDCap's decimal rounding (`round`, `roundup`, `rounddown`), exactly, and the same for one record or a million.

What REDCap computes. REDCap evaluates logic on the server in PHP, and PHP's `round($x, $n)` (PHP 5.3 to 8.3, the
algorithm of the PHP "rounding" RFC) is decimal rounding of the number as written, half away from zero:

1. *Pre-rounding.* The value is first rounded to 15 significant digits (what a double holds reliably): with
   `e = floor(log10(|x|))`, `x * 10^(14 - e)` is rounded to an integer, then moved back to `n` decimals by one
   division. This sheds binary noise: 1.005 is stored as 1.00499999999999989..., but reads 1.00500000000000, so
   `round(1.005, 2)` is 1.01; `1.1 * 100` (110.00000000000001) reads 110. It is skipped when `n` is at or beyond the
   15th significant digit, or more than 14 digits before it.
2. *Rounding* half away from zero: `floor(t + 0.5)` for t >= 0, `ceil(t - 0.5)` below (2.5 -> 3, -2.5 -> -3).
   A scaled value of 1e15 or more is returned unchanged (there are no decimals left to round).
3. *Back to n decimals* by one IEEE division by 10^n (10^n is exact up to 10^22), so the result is the double nearest
   the decimal result: `round(24.2214, 1)` is the double that prints as 24.2. Beyond 22 places PHP goes through
   text ("%.15f" then strtod) and so does this module.

`roundup`/`rounddown` are REDCap's ceiling/floor at n decimals (towards +infinity / -infinity; trialkit's reading,
tested in tests/logic/logic_semantics_table.py). They share steps 1 and 3, with ceil/floor in step 2, so binary
noise is not rounded up (`roundup(1.1 * 100)` is 110). A fractional n is truncated, as PHP's (int) cast does.

Why numpy and not polars arithmetic: polars divides a column by a constant by multiplying with the reciprocal
(242 * 0.1 = 24.200000000000003, where 242 / 10 = 24.2) and chooses that kernel by operand length, so the same
record gave 24.2 alone and 24.200000000000003 among others. numpy divides element by element, so the result depends
only on the record. The functions take and return whole arrays: no Python code runs per record (except the
rare values rounded to more than 22 places).
"""

from __future__ import annotations

import numpy as np

# PHP's php_intpow10: exact powers up to 1e22, pow() beyond (inexact, as in PHP).
_EXACT_POW10 = np.array([10.0**k for k in range(23)])
MAX_PLACES = 1000  # |n| beyond this rounds like 1000 (10^1000 is already infinity)


def _pow10(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.int64)
    exact = _EXACT_POW10[np.clip(k, 0, 22)]
    with np.errstate(over="ignore"):
        return np.where(k <= 22, exact, np.power(10.0, k.astype(np.float64)))


def _to_integer(t: np.ndarray, how: str) -> np.ndarray:
    if how == "up":
        return np.ceil(t)
    if how == "down":
        return np.floor(t)
    return np.where(t >= 0.0, np.floor(t + 0.5), np.ceil(t - 0.5))


def php_round(values, places, how: str = "round") -> np.ndarray:
    """REDCap's round (how='round'), roundup ('up') or rounddown ('down') of `values` at `places` decimals.

    `values`: float array (NaN = blank, kept NaN); `places`: an int or an array of them (NaN = blank places gives a
    blank result). Returns a new float array.
    """
    v = np.array(values, dtype=np.float64, copy=True, ndmin=1)
    p_raw = np.broadcast_to(np.asarray(places, dtype=np.float64), v.shape)
    blank_places = np.isnan(p_raw)
    p = np.trunc(np.clip(np.where(blank_places, 0.0, p_raw), -MAX_PLACES, MAX_PLACES)).astype(np.int64)
    out = v.copy()
    work = np.isfinite(v) & (v != 0.0)
    with np.errstate(all="ignore"):
        magnitude = np.floor(np.log10(np.abs(np.where(work, v, 1.0)))).astype(np.int64)
        precision = 14 - magnitude
        pre = work & (precision > p) & (precision - p < 15)
        # 1. pre-round to 15 significant digits, then move the point to `places` with one division.
        f2 = _pow10(np.abs(precision))
        t_pre = _to_integer(np.where(precision >= 0, v * f2, v / f2), "round")
        t_pre = t_pre / _pow10(np.abs(p - precision))
        # ... or scale directly; a result of 1e15 or more has nothing left to round.
        f1 = _pow10(np.abs(p))
        t_plain = np.where(p >= 0, v * f1, v / f1)
        unchanged = ~pre & ~(np.abs(t_plain) < 1e15)
        # 2. to an integer; 3. back to `places` decimals with one correctly rounded operation.
        t = _to_integer(np.where(pre, t_pre, t_plain), how)
        result = np.where(p > 0, t / f1, t * f1)
    done = work & ~unchanged
    out[done] = result[done]
    far = done & (np.abs(p) >= 23)
    for i in np.flatnonzero(far):  # PHP: "%.15f" then strtod, the nearest double to the decimal result
        out[i] = float(f"{t[i]:f}e{-p[i]}")
    out[blank_places] = np.nan
    return out


def round_value(value: float | None, places: float | None, how: str = "round") -> float | None:
    """`php_round` of one value (None = blank), for constants folded at compile time and for tests."""
    if value is None or places is None:
        return None
    got = float(php_round([value], places, how)[0])
    return None if np.isnan(got) else got
