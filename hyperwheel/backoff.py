"""Capped exponential backoff with jitter, shared by every retrying step."""

import random


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before try ``attempt`` (1-based).

    Half of the capped exponential is fixed and half is random, so many
    waiting tasks spread out without any of them retrying at once.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))

    return float(ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 - jitter, not crypto
