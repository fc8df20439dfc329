"""How long training will take, and a time budget: a transformers TrainerCallback that measures the first steps,
estimates the whole run from them (printed, shown in the progress bar and recorded in the card), and stops training
at `train.max_train_seconds` so that `hub train` still evaluates and writes a valid folder."""

from __future__ import annotations

import time
from typing import Any

from tqdm.auto import tqdm
from transformers import ProgressCallback, TrainerCallback

ESTIMATE_AFTER = 5  # steps measured before the estimate (the first one also pays for warm-up)


class TrainingClock(TrainerCallback):
    """Steps done, the estimate of the whole run, and whether the budget stopped it."""

    def __init__(self, task: str, planned_steps: int, budget_seconds: float | None, progress: bool):
        self.task, self.planned_steps, self.budget_seconds = task, planned_steps, budget_seconds
        self.progress = progress
        self.started = time.perf_counter()
        self.steps = 0
        self.estimated_seconds: float | None = None
        self.stopped_by_budget = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.started = time.perf_counter()  # the Trainer is built: from here on it trains
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.steps = state.global_step
        elapsed = time.perf_counter() - self.started
        if self.steps == min(ESTIMATE_AFTER, self.planned_steps) and self.estimated_seconds is None:
            self.estimated_seconds = elapsed / self.steps * self.planned_steps
            if self.progress:
                budget = (f"; stopping at the budget of {self.budget_seconds:.0f} s"
                          if self.budget_seconds is not None and self.budget_seconds < self.estimated_seconds else "")
                tqdm.write(f"[{self.task}] about {self.estimated_seconds:.0f} s for {self.planned_steps:,} steps "
                           f"({elapsed / self.steps:.2f} s per step over the first {self.steps}){budget}")
        if self.budget_seconds is not None and elapsed >= self.budget_seconds and self.steps < self.planned_steps:
            control.should_training_stop = True
            self.stopped_by_budget = True
        return control

    def report(self) -> dict[str, Any]:
        """What the training report and the card record."""
        found: dict[str, Any] = {"train_steps": self.steps, "planned_steps": self.planned_steps}
        if self.estimated_seconds is not None:
            found["estimated_seconds"] = round(self.estimated_seconds, 1)
        if self.stopped_by_budget:
            found["stopped_by_time_budget"] = self.budget_seconds
        return found


class EstimatingProgress(ProgressCallback):
    """transformers' training bar, with the clock's estimate of the whole run and the time budget in its postfix (the
    bar's own remaining time follows the step rate of the moment; the budget may stop the run before the bar ends)."""

    def __init__(self, clock: TrainingClock):
        super().__init__()
        self.clock = clock

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        super().on_step_end(args, state, control, **kwargs)
        if self.training_bar is not None and self.clock.estimated_seconds is not None:
            self.training_bar.set_postfix_str(self.postfix(), refresh=False)
        return control

    def postfix(self) -> str:
        estimate = f"whole run ≈ {self.clock.estimated_seconds:.0f} s"
        budget = self.clock.budget_seconds
        return estimate if budget is None else f"{estimate}, budget {budget:.0f} s"
