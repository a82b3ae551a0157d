"""The shapes every suite's facts share: how the best epoch is chosen, and what a suite is."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Selection:
    """The best-epoch rule as data: the mean of ``metrics`` on the select split (one metric: itself).

    ``name`` is how result.json's ``selection.metric`` spells it: ``accuracy``, ``mean(accuracy,f1)``.
    """
    metrics: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.metrics[0] if len(self.metrics) == 1 else f"mean({','.join(self.metrics)})"

    def score(self, metrics: Mapping[str, float]) -> float:
        """The rule applied to one evaluation's metrics; a metric it needs but lacks is a ValueError."""
        missing = [m for m in self.metrics if m not in metrics]
        if missing:
            raise ValueError(f"selection {self.name} needs metrics {missing}, got {sorted(metrics)}")
        return float(sum(float(metrics[m]) for m in self.metrics) / len(self.metrics))


@dataclass(frozen=True)
class Suite:
    """One task family: its tasks (in the paper's order), what each reports and selects on, and how runs
    may split and report its data. The task configs (task=<family>/<dataset>) are made from this."""
    family: str
    modality: str                       # text | image: which model variant it trains (model.backbones)
    tasks: tuple[str, ...]              # datasets, in the paper's order
    main_metric: Mapping[str, str]      # dataset -> the metric a run's summary line leads with
    selection: Mapping[str, Selection]  # dataset -> its best-epoch rule
    protocols: tuple[str, ...]          # task.protocol's choices
    protocol: str                       # ... and the default
    report_rules: tuple[str, ...]       # task.report's choices (tasks.training.evaluation)
    head: str | None = None             # a text backbone's task head (tasks.training.models.HEADS)
