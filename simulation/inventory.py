"""Decisions to a clean inventory (issue 10): the measure that matters to a review team.

The *inventory* of a year is what the installation reports as mines: cells a review confirmed
plus cells the active model predicts that no review rejected (``Territory.cell_statuses``' statuses
``confirmed`` and ``predicted``, the same rows the map, the report and the exports read).
:func:`drive_queue` lets a simulated reviewer (reviewer name ``ORACLE``, answering from a
:class:`Truth`) work through the app's real loop:

* cards from ``review.cards.next_cards`` (the queue the web app serves, with its leases and
  its spatial de-duplication within a batch);
* each answer recorded through ``review.decisions.decide``, as a reviewer's key press is;
* every ``retrain_every`` decisions, ``pipeline.cycle.run_cycle``: training on every lesson,
  validation on the fixed blocks, re-scoring the whole territory and activation (or not, by
  ``ACTIVATION_MARGIN``), exactly as the Retrain button's worker runs it.

After every batch the inventory is compared with the truth (:func:`inventory_point`). A run ends
when the inventory reaches ``target_precision`` at ``target_recall``, when ``budget`` decisions
are spent, or when the queue runs dry (with no decision left to retrain on).

The seed's way (:func:`seed_way_plan`): review the first model's predicted cells in random order
and never retrain, which is how the pilot study corrected its 71,134 points.

Cells whose truth is ambiguous (some mine, but under the 5 % rule) are answered ``skip`` (a spent
decision) and count in neither precision nor recall. Second review is off in these runs (one
reviewer): every decision is effective at once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.store import QUEUE_STRATEGIES, Store
from pipeline.cycle import run_cycle
from pipeline.settings import Settings
from review.cards import next_cards
from review.decisions import DecisionForm, decide
from review.second_review import SecondReviewPolicy

#: The simulated reviewer's account name in the label events.
ORACLE = "inventory-oracle"
#: Statuses of ``Territory.cell_statuses`` that make up the inventory.
INVENTORY_STATUSES: tuple[str, ...] = ("confirmed", "predicted")
#: Seconds a card stays leased to the simulated reviewer.
LEASE_SECONDS = 600.0


@dataclass(frozen=True)
class Truth:
    """What a cell-year really is: ``mines`` and ``background`` cell ids of ``year``; any other
    cell is ambiguous (answered ``skip`` and left out of precision and recall)."""

    year: int
    mines: frozenset[int]
    background: frozenset[int]

    def __post_init__(self) -> None:
        if not self.mines:
            raise ValueError(f"the truth of {self.year} holds no mine cell")
        if self.mines & self.background:
            raise ValueError("a cell cannot be both mine and background in the truth")

    @classmethod
    def from_labels(cls, year: int, labels: dict[int, str]) -> Truth:
        """From cell id -> 'mine' / 'background' (other labels: ambiguous)."""
        return cls(year, frozenset(c for c, v in labels.items() if v == "mine"),
                   frozenset(c for c, v in labels.items() if v == "background"))

    def answer(self, cell_id: int) -> str:
        """The reviewer's key: mine, background, or skip for an ambiguous cell."""
        if cell_id in self.mines:
            return "mine"
        return "background" if cell_id in self.background else "skip"


@dataclass(frozen=True)
class InventoryPoint:
    """The inventory after ``decisions`` decisions and ``cycles`` retrain cycles."""

    decisions: int
    cycles: int
    model: str
    inventory: int
    true_positives: int
    false_positives: int
    true_mines: int

    @property
    def precision(self) -> float:
        counted = self.true_positives + self.false_positives
        return self.true_positives / counted if counted else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.true_mines

    def row(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "cycles": self.cycles, "model": self.model,
                "inventory": self.inventory, "true_positives": self.true_positives,
                "false_positives": self.false_positives, "true_mines": self.true_mines,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4)}


def inventory_cells(store: Store, year: int) -> set[int]:
    """Cell ids of the year's inventory under the active model (confirmed or predicted and not
    rejected, inside the territory when one is loaded)."""
    model = store.models.active_model()
    if model is None:
        raise ValueError("no active model: train or activate one first")
    cells: set[int] = set()
    for chunk in store.territory.iter_cell_statuses(model["version"], year, float(model["threshold"]),
                                                    inside_only=True):
        cells.update(int(r["cell_id"]) for r in chunk if r["status"] in INVENTORY_STATUSES)
    return cells


def inventory_point(store: Store, truth: Truth, decisions: int, cycles: int) -> InventoryPoint:
    """Compare the year's inventory with the truth (ambiguous cells counted in neither)."""
    cells = inventory_cells(store, truth.year)
    return InventoryPoint(
        decisions=decisions, cycles=cycles, model=store.models.active_model()["version"],
        inventory=len(cells), true_positives=len(cells & truth.mines),
        false_positives=len(cells & truth.background), true_mines=len(truth.mines))


@dataclass(frozen=True)
class QueuePlan:
    """How the simulated reviewer works: the queue order (``strategy``, one of
    QUEUE_STRATEGIES), a retrain cycle every ``retrain_every`` decisions (None: never), cards
    per batch, and when to stop."""

    strategy: str
    retrain_every: int | None
    predicted_only: bool = False
    batch: int = 5
    budget: int = 10_000
    target_precision: float = 0.95
    target_recall: float = 0.90
    name: str = ""

    def __post_init__(self) -> None:
        if self.strategy not in QUEUE_STRATEGIES:
            raise ValueError(f"unknown queue order {self.strategy!r}; choose one of "
                             f"{', '.join(QUEUE_STRATEGIES)}")
        if self.retrain_every is not None and self.retrain_every < 1:
            raise ValueError(f"retrain_every must be at least 1, got {self.retrain_every}")
        if self.batch < 1 or self.budget < 0:
            raise ValueError("batch must be at least 1 and budget at least 0")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        every = f"retrain every {self.retrain_every}" if self.retrain_every else "no retrain"
        return f"{self.strategy} ({every})"

    def reached(self, point: InventoryPoint) -> bool:
        return (point.precision >= self.target_precision
                and point.recall >= self.target_recall)


def seed_way_plan(budget: int, *, batch: int = 5, **targets: float) -> QueuePlan:
    """The pilot study's correction: every predicted cell of the first model, in random order,
    with no retrain."""
    return QueuePlan("random", None, predicted_only=True, batch=batch, budget=budget,
                     name="seed's way (every predicted cell, no retrain)", **targets)


@dataclass
class QueueRun:
    """What one plan did: its inventory after every batch and each cycle's outcome."""

    plan: QueuePlan
    points: list[InventoryPoint] = field(default_factory=list)
    cycles: list[dict[str, Any]] = field(default_factory=list)
    stop: str = ""
    seconds: float = 0.0

    @property
    def reached_at(self) -> int | None:
        """Decisions when the target was first reached (None: never)."""
        return next((p.decisions for p in self.points if self.plan.reached(p)), None)

    @property
    def decisions(self) -> int:
        return self.points[-1].decisions if self.points else 0

    def summary(self) -> dict[str, Any]:
        last = self.points[-1]
        return {"plan": self.plan.label, "strategy": self.plan.strategy,
                "retrain_every": self.plan.retrain_every, "reached_at": self.reached_at,
                "decisions": last.decisions, "stop": self.stop,
                "final_precision": round(last.precision, 4),
                "final_recall": round(last.recall, 4), "cycles": len(self.cycles),
                "cycles_failed": sum(c["status"] != "succeeded" for c in self.cycles),
                "models_kept_inactive": sum(c["status"] == "succeeded" and not c["activated"]
                                            for c in self.cycles),
                "seconds": round(self.seconds, 1)}


Progress = Callable[[InventoryPoint], None]


def drive_queue(store: Store, settings: Settings, truth: Truth, plan: QueuePlan, *,
                progress: Progress | None = None) -> QueueRun:
    """Let the simulated reviewer work through the installation's queue by ``plan`` (see the
    module docstring); returns the inventory after every batch and every cycle."""
    run = QueueRun(plan)
    started = time.monotonic()
    policy = SecondReviewPolicy(share=0.0, all_mines=False)
    decisions = since_cycle = 0

    def record() -> InventoryPoint:
        point = inventory_point(store, truth, decisions, len(run.cycles))
        run.points.append(point)
        if progress:
            progress(point)
        return point

    def retrain() -> None:
        cycle_started = time.monotonic()
        row = run_cycle(store, settings)
        active = store.models.active_model()
        run.cycles.append({"after": decisions, "status": row["status"],
                           "model": row["new_model"], "message": row["message"],
                           "activated": bool(active and active["version"] == row["new_model"]),
                           "seconds": round(time.monotonic() - cycle_started, 1)})
        record()

    point = record()
    while not plan.reached(point):
        if decisions >= plan.budget:
            run.stop = "budget spent"
            break
        wanted = min(plan.batch, plan.budget - decisions,
                     plan.retrain_every - since_cycle if plan.retrain_every else plan.batch)
        cards = next_cards(store, reviewer=ORACLE, strategy=plan.strategy, year=truth.year,
                           predicted_only=plan.predicted_only, n=wanted,
                           lease_seconds=LEASE_SECONDS)
        if not cards and not (plan.retrain_every and since_cycle):
            run.stop = "queue empty"
            break
        decisions += _answer(store, truth, cards, policy, first_token=decisions)
        since_cycle += len(cards)
        if plan.retrain_every and (since_cycle >= plan.retrain_every or not cards):
            since_cycle = 0
            retrain()
            point = run.points[-1]
        else:
            point = record()
    else:
        run.stop = "target reached"
    run.seconds = time.monotonic() - started
    return run


def _answer(store: Store, truth: Truth, cards: Iterable[dict[str, Any]],
            policy: SecondReviewPolicy, *, first_token: int) -> int:
    """Record the truth's answer for each card, as the reviewer's key presses; how many."""
    done = 0
    for card in cards:
        cell_id = int(card["cell_id"])
        decide(store, reviewer=ORACLE, cell_id=cell_id, year=truth.year, policy=policy,
               form=DecisionForm(truth.answer(cell_id), f"inventory-{first_token + done}"))
        done += 1
    return done


def winner(decisions_by_queue: dict[str, int | None]) -> str | None:
    """The queue that reached the target with the fewest decisions (ties go to the earlier
    queue in QUEUE_STRATEGIES); None when no queue reached it."""
    reached = {q: d for q, d in decisions_by_queue.items() if d is not None}
    if not reached:
        return None
    order = {name: i for i, name in enumerate(QUEUE_STRATEGIES)}
    return min(reached, key=lambda q: (reached[q], order.get(q, len(order))))


def copy_database(source: Path, target_dir: Path) -> None:
    """Copy an installation's database into ``target_dir`` (as minewatch.db), so that a
    simulated reviewer works on a snapshot and the original installation is never touched."""
    target_dir.mkdir(parents=True, exist_ok=True)
    # sqlite's backup API copies a consistent snapshot, WAL included.
    with sqlite3.connect(source) as src, sqlite3.connect(target_dir / "minewatch.db") as dst:
        src.backup(dst)
