"""Where the decision round trip goes: every SQL statement of the review requests, timed.

Works on a copy of an installation (``--data-dir``, e.g. one built by ``run.py demo``) through the
real Flask app (test client, no network): one reviewer account logs in, picks a year's queue
(highest score first) and makes ``--rounds`` decisions (POST of the label, whose answer is the next
card). Optionally ``--labels N`` decisions by other reviewers are made first through the review
loop (``next_cards`` + ``decide``, highest score first), so the queue's top is a labelled prefix
as after a day of reviewing. Prints the decision's p50/p95
wall time, SQL statements per decision and the answer's size, then the statements with the most
time in all (mean and max ms, calls), each with its ``EXPLAIN QUERY PLAN`` (run on a database
never ANALYZEd, as the app's: a plan that depends on statistics shows up here); with
``--cprofile`` also the Python functions with the most cumulative time.

    .venv/bin/python bench/review_profile.py --data-dir instance --rounds 200 --labels 10000
    .venv/bin/python bench/review_profile.py --data-dir instance --quick

The last line is one JSON object: the decision's p50_ms and p95_ms, sql_per_decision and
sql_ms_per_decision.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sqlite_utils import Database  # noqa: E402

from bench.common import parse_args, review  # noqa: E402
from db.store import Store  # noqa: E402
from review.accounts import create_account  # noqa: E402

PASSWORD = "profile password 2026"
HTMX = {"HX-Request": "true"}
CARD = re.compile(r'<form id="card-form"[^>]*data-cell="(\d+)" data-year="(\d+)"')
TOKEN = re.compile(r'name="request_id" value="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Fetched:
    """A cursor's rows read at once (so that the timing includes the whole query)."""

    def __init__(self, cursor: Any) -> None:
        self.description, self.lastrowid = cursor.description, cursor.lastrowid
        self.rowcount = cursor.rowcount
        self._rows = cursor.fetchall()

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    def __iter__(self):
        return iter(self.fetchall())


class SqlTimer:
    """Times every ``sqlite_utils.Database.execute`` (what ``db.store`` calls) per statement."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.params: dict[str, Any] = {}
        self._original = Database.execute

    def __enter__(self) -> SqlTimer:
        timer, original = self, self._original

        def execute(db: Database, sql: str, parameters: Any = None):
            start = time.perf_counter()
            cursor = original(db, sql, parameters) if parameters is not None else original(db, sql)
            fetched = Fetched(cursor)
            timer.calls.append((sql, (time.perf_counter() - start) * 1000))
            timer.params.setdefault(sql, parameters)
            return fetched

        Database.execute = execute  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Database.execute = self._original  # type: ignore[method-assign]


def label_top(database: Path, year: int, n: int) -> None:
    """``n`` decisions by other reviewers on the top of the year's score order."""
    with Store(database) as store:
        review(store, n, reviewers=[f"other{i}" for i in range(10)], year=year,
               label=lambda _i, _card: "background", strategy="score")


def plan(database: Path, sql: str, parameters: Any) -> str:
    with Store(database) as store:
        try:
            rows = store.db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters or []).fetchall()
        except sqlite3.Error as error:  # a statement EXPLAIN cannot take
            return f"  ({type(error).__name__})"
    return "\n".join(f"    {row[-1]}" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--labels", type=int, default=0, help="decisions imported first")
    parser.add_argument("--top", type=int, default=12, help="slowest statements shown")
    parser.add_argument("--cprofile", action="store_true",
                        help="also print the functions with the most cumulative time")
    args = parse_args(parser, rounds=5, top=3)

    from labeller import create_app

    with tempfile.TemporaryDirectory(prefix="minewatch-profile-") as tmp:
        data = Path(tmp) / "instance"
        shutil.copytree(args.data_dir, data, ignore=shutil.ignore_patterns(
            "thumbnails", "exports", "cycles", "*.db-wal", "*.db-shm"))
        app = create_app({"DATA_DIR": str(data), "LOGIN_RATE_LIMIT": "1000 per minute"})
        database = app.config["SETTINGS"].database_path
        with Store(database) as store:
            year = store.scenes.years()[-1]
            create_account(store, "profiler", "reviewer", PASSWORD)
        if args.labels:
            label_top(database, year, args.labels)
        client = app.test_client()
        page = client.get("/login").get_data(as_text=True)
        csrf = CSRF.search(page).group(1)
        client.post("/login", data={"name": "profiler", "password": PASSWORD, "csrf_token": csrf})
        csrf = CSRF.search(client.get("/review").get_data(as_text=True)).group(1)
        headers = {**HTMX, "X-CSRFToken": csrf}
        client.post("/review/queue", data={"strategy": "score", "year": str(year)},
                    headers=headers)
        html = client.get("/review/card", headers=headers).get_data(as_text=True)
        walls: dict[str, list[float]] = defaultdict(list)
        counts: dict[str, list[int]] = defaultdict(list)
        sizes: list[int] = []
        timer = SqlTimer()
        profiler = cProfile.Profile() if args.cprofile else None
        if profiler:
            profiler.enable()
        with timer:
            for _ in range(args.rounds):
                card = CARD.search(html)
                if card is None:
                    break
                before = len(timer.calls)
                start = time.perf_counter()
                response = client.post(f"/cells/{card.group(1)}/{card.group(2)}/label",
                                       data={"label": "background",
                                             "request_id": TOKEN.search(html).group(1)},
                                       headers=headers)
                walls["decision"].append((time.perf_counter() - start) * 1000)
                counts["decision"].append(len(timer.calls) - before)
                html = response.get_data(as_text=True)
                sizes.append(len(html.encode()))
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        per_sql: dict[str, list[float]] = defaultdict(list)
        for sql, ms in timer.calls:
            per_sql[sql].append(ms)
        for kind, values in walls.items():
            print(f"{kind}: n={len(values)} p50={np.percentile(values, 50):.1f} ms"
                  f" p95={np.percentile(values, 95):.1f} ms;"
                  f" SQL statements per request {np.mean(counts[kind]):.1f};"
                  f" answer {np.mean(sizes) / 1024:.1f} KiB")
        total = sum(ms for _, ms in timer.calls) / max(len(walls["decision"]), 1)
        print(f"SQL time per decision: {total:.1f} ms")
        figures = {"decisions": len(walls["decision"]),
                   "p50_ms": round(float(np.percentile(walls["decision"], 50)), 2),
                   "p95_ms": round(float(np.percentile(walls["decision"], 95)), 2),
                   "sql_per_decision": round(float(np.mean(counts["decision"])), 1),
                   "sql_ms_per_decision": round(total, 2)}
        ranked = sorted(per_sql.items(), key=lambda kv: -sum(kv[1]))
        for sql, values in ranked[:args.top]:
            print(f"\n{sum(values) / len(walls['decision']):6.2f} ms/decision"
                  f"  mean {np.mean(values):.2f} ms  max {max(values):.1f} ms"
                  f"  calls {len(values)}: {' '.join(sql.split())[:300]}")
            print(plan(database, sql, timer.params[sql]))
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
