"""What the benchmarks share: their ``--quick`` mode, and installations built the way a team
builds one (``run.py demo``: ingest, seed labels, train, score; decisions through the review
loop), never by writing rows by hand.

Every benchmark accepts ``--quick``: a small run of seconds to a minute on a 2-core machine (a
tiny territory, few requests), which ``tests/test_bench.py`` runs so that a benchmark broken by a
change fails the test suite. Its figures say that the benchmark works, not how fast the app is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from db.store import Store
from pipeline.settings import Settings, load_settings
from review.cards import next_cards
from review.decisions import DecisionForm, decide
from review.second_review import SecondReviewPolicy
from simulation.demo import build_demo_installation
from simulation.inventory import copy_database

QUICK_HELP = "a small run of seconds (a check that the benchmark works, not figures)"
#: The year a benchmark's demo territory is generated for.
DEMO_YEAR = 2021


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
               **quick: Any) -> argparse.Namespace:
    """Parse ``argv`` with a ``--quick`` flag added; under ``--quick`` the defaults become
    ``quick`` (flags given explicitly still win)."""
    parser.add_argument("--quick", action="store_true", help=QUICK_HELP)
    known, _ = parser.parse_known_args(argv)
    if known.quick:
        parser.set_defaults(**quick)
    return parser.parse_args(argv)


def add_installation_arguments(parser: argparse.ArgumentParser, size_km: int) -> None:
    """``--data-dir`` (an installation to work on a copy of) or ``--size-km`` of a new demo."""
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="an installation (e.g. built by `run.py demo`) to measure a copy "
                             "of; default: a new demo territory of --size-km")
    parser.add_argument("--size-km", type=int, default=size_km,
                        help=f"side of the demo territory built without --data-dir "
                             f"(default {size_km})")
    parser.add_argument("--epochs", type=int, default=None,
                        help="TRAIN_EPOCHS of the demo's first model (default: the setting's)")


def installation(args: argparse.Namespace, work: Path, *, years: Sequence[int] = (DEMO_YEAR,),
                 **overrides: Any) -> Settings:
    """The settings of a working copy of ``--data-dir`` in ``work``, or of a new demo
    installation of ``--size-km`` and ``years`` built there by the functions behind
    ``run.py demo``."""
    target = work / "instance"
    if args.data_dir is not None:
        copy_installation(args.data_dir, target)
        return load_settings({"DATA_DIR": str(target), "TRAIN_EPOCHS": args.epochs, **overrides},
                             environ={})
    return demo_installation(target, size_km=args.size_km, years=years, epochs=args.epochs,
                             **overrides)


def demo_installation(data_dir: Path, *, size_km: int, years: Sequence[int] = (DEMO_YEAR,),
                      epochs: int | None = None, **overrides: Any) -> Settings:
    """Build the synthetic demo (ingest, seed labels, first model, scores) in ``data_dir``."""
    settings = load_settings({"DATA_DIR": str(data_dir), "TRAIN_EPOCHS": epochs, **overrides},
                             environ={})
    started = time.perf_counter()
    with Store(settings.database_path) as store:
        build_demo_installation(store, settings, size_km=size_km, years=tuple(years))
    print(f"demo: {size_km} x {size_km} km, {', '.join(map(str, years))}, built, trained and "
          f"scored in {time.perf_counter() - started:.0f} s", flush=True)
    return settings


def copy_installation(source: Path, target: Path) -> Path:
    """A working copy of an installation: the database and models copied, the imagery store
    hard-linked (benchmarks only read it)."""
    if not (source / "minewatch.db").is_file():
        raise SystemExit(f"{source}: no installation there (no minewatch.db)")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("imagery", "minewatch.db*"))
    if (source / "imagery").is_dir():
        shutil.copytree(source / "imagery", target / "imagery", copy_function=os.link)
    copy_database(source / "minewatch.db", target)
    return target


def review(store: Store, decisions: int, *, reviewers: Sequence[str], year: int,
           label: Callable[[int, dict[str, Any]], str], strategy: str = "uncertainty",
           policy: SecondReviewPolicy | None = None, batch: int = 25) -> int:
    """Up to ``decisions`` decisions through the review loop, as reviewers make them: each
    reviewer in turn leases a batch (``next_cards``) and decides every card (``decide``),
    answering ``label(i, card)`` for the i-th decision. Returns the decisions made (fewer when
    the queue runs dry)."""
    done = 0
    while done < decisions:
        before = done
        for reviewer in reviewers:
            cards = next_cards(store, reviewer=reviewer, strategy=strategy, year=year,
                               n=min(batch, decisions - done), lease_seconds=3600)
            for card in cards:
                decide(store, reviewer=reviewer, cell_id=int(card["cell_id"]), year=year,
                       policy=policy,
                       form=DecisionForm(label(done, card), f"bench-{reviewer}-{done}"))
                done += 1
            if done >= decisions:
                break
        if done == before:
            break
    return done
