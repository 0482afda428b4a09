"""HTTP load benchmark: reviewers with accounts label through waitress on loopback, then the
database is checked (issue 9).

Works on a copy of an installation (``--data-dir``, e.g. one built by ``run.py demo``): the copy
gets ``--reviewers`` reviewer accounts and one lead; the app is served by waitress (8 threads)
on a free loopback port. Each reviewer logs in, picks one year's queue (reviewers are spread
over the years, highest score first), then loops over the htmx review flow: a card,
``--think`` seconds of thinking, a decision (POST, timed: the round trip the reviewer waits for);
about 5 % of decisions are undone (POST /undo), 3 % are sent twice (double submit), 2 % of past
decisions are changed (POST /decisions/<id>). With ``--cycle`` the lead starts a retrain cycle
at the start; with ``--exports N`` the lead downloads the cells CSV export N times meanwhile.
Loops are bounded: the run ends at ``--decisions`` acknowledged decisions, at ``--max-seconds``,
or when the queue runs dry.

Then the database is checked: every acknowledged decision must be stored (``lost``), no
cell-year may carry decisions of two bench reviewers (``double_served``) except a decision and
its blind second review (``second_reviewed`` counts those), and every response
must be what the flow expects (``errors``: 5xx, unexpected 4xx, broken connections). The last
line printed is one JSON object with the keys sent, acknowledged, stored, lost, double_served,
errors, p50_ms, p95_ms, p99_ms (plus a few more).

Full size (issue 9; a demo large enough for 10,000 decisions, e.g. ``run.py demo --size-km 60``):
    .venv/bin/python bench/http_load.py --data-dir instance --reviewers 10 --decisions 10000 \\
        --think 1.0 --cycle --exports 2
A small run:
    .venv/bin/python bench/http_load.py --data-dir instance --reviewers 10 --decisions 300 \\
        --think 0.05 --max-seconds 120
A check that it works (2 reviewers, 20 decisions, no thinking):
    .venv/bin/python bench/http_load.py --data-dir instance --quick
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import parse_args  # noqa: E402
from db.store import Store  # noqa: E402
from review.accounts import create_account  # noqa: E402

PASSWORD = "bench password 2026"
HTMX = {"HX-Request": "true"}
CARD = re.compile(r'<form id="card-form"[^>]*data-cell="(\d+)" data-year="(\d+)"')
TOKEN = re.compile(r'name="request_id" value="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CHANGE = re.compile(r'action="/decisions/(\d+)"')


@dataclass
class Tally:
    """What all reviewers did, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    acknowledged: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    undone: int = 0
    changes: int = 0
    double_submits: int = 0
    exports: int = 0
    errors: list[str] = field(default_factory=list)
    round_trips_ms: list[float] = field(default_factory=list)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text[:300])


class Browser:
    """One reviewer's keep-alive connection with the session cookie."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookie = ""
        self.csrf = ""

    def request(self, method: str, path: str, data: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        sent = {"Host": "127.0.0.1", **(headers or {})}
        if self.cookie:
            sent["Cookie"] = self.cookie
        if self.csrf:
            sent["X-CSRFToken"] = self.csrf
        body = None
        if data is not None:
            body = urlencode(data)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=sent)
        response = self.conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return response.status, text, dict(response.getheaders())

    def login(self, name: str) -> None:
        _, page, _ = self.request("GET", "/login")
        self.csrf = CSRF.search(page).group(1)
        status, text, _ = self.request("POST", "/login", {"name": name, "password": PASSWORD,
                                                          "csrf_token": self.csrf})
        if status != 302:
            raise RuntimeError(f"login of {name} failed: {status} {text[:200]}")
        _, page, _ = self.request("GET", "/review")
        self.csrf = CSRF.search(page).group(1)


def reviewer_loop(name: str, port: int, args: argparse.Namespace, tally: Tally,
                  stop: Callable[[], bool], seed: int, year: int) -> None:
    """Log in, pick ``year``'s queue and review until ``stop()``; every response is checked."""
    rng = random.Random(seed)
    browser = Browser(port)
    try:
        browser.login(name)
        status, _, _ = browser.request("POST", "/review/queue", {"strategy": "score",
                                                                  "year": str(year)})
        if status != 302:
            tally.error(f"{name}: queue choice {status}")
        status, html, _ = browser.request("GET", "/review/card", headers=HTMX)
        while not stop():
            card = CARD.search(html)
            if status != 200 or card is None:
                if status != 200:
                    tally.error(f"{name}: card {status}")
                return  # queue dry (or broken): this reviewer is done
            cell, year, token = int(card.group(1)), int(card.group(2)), TOKEN.search(html).group(1)
            time.sleep(args.think)
            label = rng.choice(("mine", "background", "background", "skip"))
            path = f"/cells/{cell}/{year}/label"
            data = {"label": label, "request_id": token}
            started = time.perf_counter()
            status, html, _ = browser.request("POST", path, data, HTMX)
            elapsed = (time.perf_counter() - started) * 1000
            with tally.lock:
                tally.sent += 1
                tally.round_trips_ms.append(elapsed)
                if status == 200:
                    tally.acknowledged[f"label:{name}:{token}"] = (name, cell, year)
            if status != 200:
                tally.error(f"{name}: label {status} {html[:120]}")
                continue
            roll = rng.random()
            if roll < 0.03:  # a double submit: the same token again counts once
                again, _, _ = browser.request("POST", path, data, HTMX)
                with tally.lock:
                    tally.sent += 1
                    tally.double_submits += 1
                if again != 200:
                    tally.error(f"{name}: double submit {again}")
            elif roll < 0.08:  # undo: the undone cell comes back as the card
                status, html, _ = browser.request("POST", "/undo", {"request_id": f"u{token}"},
                                                  HTMX)
                with tally.lock:
                    tally.undone += 1
                if status != 200 or "Undone" not in html:
                    tally.error(f"{name}: undo {status}")
            elif roll < 0.10 and (change := CHANGE.search(html)):
                answer, _, _ = browser.request(
                    "POST", f"/decisions/{change.group(1)}",
                    {"label": "mine", "request_id": f"c{token}"}, HTMX)
                with tally.lock:
                    tally.changes += 1
                if answer != 200:
                    tally.error(f"{name}: change {answer}")
    except (OSError, http.client.HTTPException, RuntimeError, AttributeError) as error:
        tally.error(f"{name}: {type(error).__name__}: {error}")


def lead_loop(port: int, args: argparse.Namespace, tally: Tally, stop: Callable[[], bool]) -> None:
    """The lead starts a cycle (``--cycle``) and ``--exports`` background export jobs meanwhile
    (POST /exports, then the download list is polled as the page does)."""
    browser = Browser(port)
    try:
        browser.login("bench-lead")
        if args.cycle:
            status, text, _ = browser.request("POST", "/cycles", {}, HTMX)
            if status != 200:
                tally.error(f"lead: cycle {status} {text[:120]}")
        for _ in range(args.exports):
            if stop():
                return
            status, _, _ = browser.request("POST", "/exports", {"kind": "export",
                                                                 "format": "csv",
                                                                 "layer": "cells"}, HTMX)
            with tally.lock:
                tally.exports += 1
            if status != 200:
                tally.error(f"lead: export {status}")
            for _ in range(5):
                status, _, _ = browser.request("GET", "/exports/list", None, HTMX)
                if status != 200:
                    tally.error(f"lead: download list {status}")
                time.sleep(1)
    except (OSError, http.client.HTTPException, RuntimeError, AttributeError) as error:
        tally.error(f"lead: {type(error).__name__}: {error}")


def wait_for_cycle(database: Path, until: float) -> str:
    """The bench's cycle outcome ("succeeded: m0002 ...", "failed: ...", or "still running")."""
    with Store(database) as store:
        while store.cycles.running_cycle() is not None and time.monotonic() < until:
            time.sleep(1)
        cycles = store.cycles.cycles()
    if not cycles:
        return "not started"
    last = cycles[-1]
    return f"{last['status']}: {last['message']}"[:200]


def serve_until(server: Any, stopped: threading.Event) -> None:
    """Waitress's event loop, one poll (at most 0.1 s) at a time, until ``stopped`` is set.

    ``server.run()`` loops until its sockets are gone; closing them from another thread while
    its ``select`` waits on them ends that thread with "OSError: Bad file descriptor". Here the
    loop ends first and the sockets are closed afterwards (``stop_server``).
    """
    while not stopped.is_set():
        server.asyncore.loop(timeout=0.1, map=server._map, use_poll=server.adj.asyncore_use_poll,
                             count=1)


def stop_server(server: Any, stopped: threading.Event, serving: threading.Thread) -> None:
    """Stop waitress without a traceback: first its worker threads (each finishes its task and
    wakes the loop through the trigger one last time), then the loop, then the sockets.

    Closing the trigger while a worker still finishes a request makes that worker's wake-up
    fail with "OSError: Bad file descriptor"; closing sockets while the loop polls them makes
    the loop's fail.
    """
    server.task_dispatcher.shutdown(timeout=30)
    stopped.set()
    serving.join()
    for channel in list(server._map.values()):
        if channel not in (server, server.trigger):
            channel.close()
    server.close()  # the listening socket and the trigger


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check(database: Path, tally: Tally, names: list[str]) -> dict[str, Any]:
    """Acknowledged decisions stored? Cell-years decided by two bench reviewers?"""
    with Store(database) as store:
        keys = {row[0] for row in store.db.execute(
            "SELECT request_id FROM label_events WHERE kind = 'label' AND request_id LIKE"
            " 'label:bench-%'").fetchall()}
        marks = ",".join("?" * len(names))
        # two reviewers on a cell-year is right only as a decision and its blind second review
        doubles = store.db.execute(
            "SELECT e.cell_id, e.year FROM label_events e LEFT JOIN second_reviews r"
            " ON r.cell_id = e.cell_id AND r.year = e.year WHERE e.kind = 'label'"
            f" AND e.reviewer IN ({marks}) GROUP BY e.cell_id, e.year"
            " HAVING count(DISTINCT e.reviewer) > 1 AND NOT (count(DISTINCT e.reviewer) = 2"
            " AND r.second_reviewer IS NOT NULL"
            " AND sum(e.reviewer NOT IN (r.first_reviewer, r.second_reviewer)) = 0)",
            names).fetchall()
        for cell_id, year in doubles[:5]:  # what happened there, for the reader of the run
            print(f"double-served {cell_id} ({year}):", second_review_story(store, cell_id, year))
        double = len(doubles)
        second = store.db.execute("SELECT count(*) FROM second_reviews"
                                  " WHERE second_event_id IS NOT NULL").fetchone()[0]
    lost = [key for key in tally.acknowledged if key not in keys]
    return {"stored": len(keys), "lost": len(lost), "double_served": int(double),
            "second_reviewed": int(second)}


def second_review_story(store: Store, cell_id: int, year: int) -> str:
    """A cell-year's events (id, kind, reviewer, label, undone) and its second-review row."""
    events = [f"{e['id']} {e['kind']} {e['reviewer']} {e['label'] or ''}"
              f"{' (undone)' if e['undone'] else ''}".strip()
              for e in store.labels.label_history(cell_id) if e["year"] == year]
    task = store.second_review.second_review(cell_id, year)
    review = (f"second review {task['status']}: first {task['first_reviewer']}, second"
              f" {task['second_reviewer']}" if task else "no second review")
    return f"{'; '.join(events)}; {review}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="an installation with scenes and an active model (copied first)")
    parser.add_argument("--reviewers", type=int, default=10)
    parser.add_argument("--decisions", type=int, default=10_000,
                        help="stop after this many acknowledged decisions")
    parser.add_argument("--think", type=float, default=1.0, help="seconds per card")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--cycle", action="store_true", help="the lead starts a retrain cycle")
    parser.add_argument("--exports", type=int, default=0, help="exports the lead downloads")
    args = parse_args(parser, reviewers=2, decisions=20, think=0.0, max_seconds=60.0)

    import logging

    from waitress.server import create_server

    from labeller import create_app

    with tempfile.TemporaryDirectory(prefix="minewatch-http-") as tmp:
        data = Path(tmp) / "instance"
        shutil.copytree(args.data_dir, data, ignore=shutil.ignore_patterns(
            "thumbnails", "exports", "cycles", "*.db-wal", "*.db-shm"))
        port = free_port()
        config = {"DATA_DIR": str(data), "PORT": port, "LOGIN_RATE_LIMIT": "1000 per minute"}
        app = create_app(config)
        database = app.config["SETTINGS"].database_path
        names = [f"bench-r{i:02d}" for i in range(args.reviewers)]
        with Store(database) as store:
            years = store.scenes.years()
            for name in names:
                create_account(store, name, "reviewer", PASSWORD)
            create_account(store, "bench-lead", "lead", PASSWORD)
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is 2"
        server = create_server(app, host="127.0.0.1", port=port, threads=8)
        stopped = threading.Event()
        serving = threading.Thread(target=serve_until, args=(server, stopped), daemon=True)
        serving.start()
        tally = Tally()
        deadline = time.monotonic() + args.max_seconds

        def stop() -> bool:
            return len(tally.acknowledged) >= args.decisions or time.monotonic() > deadline

        started = time.monotonic()
        threads = [threading.Thread(target=reviewer_loop,  # reviewers spread over the years
                                    args=(n, port, args, tally, stop, i, years[i % len(years)]))
                   for i, n in enumerate(names)]
        threads.append(threading.Thread(target=lead_loop, args=(port, args, tally, stop)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
        cycle = wait_for_cycle(database, deadline + 300) if args.cycle else None
        stop_server(server, stopped, serving)
        result = check(database, tally, names)
        trips = tally.round_trips_ms or [float("nan")]
        summary = {
            "sent": tally.sent, "acknowledged": len(tally.acknowledged), **result,
            "errors": len(tally.errors),
            "p50_ms": round(float(np.percentile(trips, 50)), 1),
            "p95_ms": round(float(np.percentile(trips, 95)), 1),
            "p99_ms": round(float(np.percentile(trips, 99)), 1),
            "undos": tally.undone, "changes": tally.changes,
            "double_submits": tally.double_submits, "exports": tally.exports,
            "reviewers": args.reviewers, "think_s": args.think, "seconds": round(seconds, 1),
            "cycle": cycle,
        }
        for text in tally.errors[:10]:
            print("error:", text)
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
