"""Made-up race runs, for the tests of the race's protocol and of its run store."""

from __future__ import annotations

import math
from collections.abc import Callable

from mlbfgs.experiments.race import RaceKey, RaceResult


def fake_worker(best_lr: dict[str, float]) -> Callable[[RaceKey], RaceResult]:
    """Runs whose final metric is |log(lr / best)| + 1 (+ 0.1 x seed), ending at step 10;
    an lr above 10 x best diverges."""

    def work(key: RaceKey) -> RaceResult:
        best = best_lr[key.optimizer]
        final = abs(math.log(key.lr / best)) + 1.0 + 0.1 * key.seed
        if key.lr > 10 * best:
            final = math.nan
        curve = [10.0, 5.0, final]
        return RaceResult(key, [0, 5, 10], curve, [0.0, 0.5, 1.0])

    return work
