#!/usr/bin/env python3
"""A bounded load run against a deployment, from its own process: `loadgen.py PLAN.json` prints JSON.

PLAN: {"url", "ca_file", "threads", "users": [{"email", "password" or "token", "marker", "message_ids",
"foreign_ids", "connection_id"}], and either "requests_per_user" (each user's calls in turn, `threads`
users at once) or "seconds" (`threads` clients for that long, each call by a user picked at random)}.
Each user signs in for a token (unless given one), then runs a mix of list, search, detail, mark-read
and (when the user has a connection_id) send calls. Every answer is checked for cross-owner data:
listed, shown and sent messages must be the user's own (ids they own, subjects with their marker),
and a probe of another user's message id must be 404. Anything else counts as an error or a leak.
Used by benchmarks/bench_prod_sim_load.py; works against any deployment whose users follow the plan.
"""

import json
import random
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

MIX = [("list", 35), ("search", 20), ("detail", 20), ("read", 10), ("send", 5), ("foreign", 10)]
MARKER = re.compile(r"mk[0-9a-f]{10}")  # the plan's markers: "mk" and 10 hex digits
KINDS = [kind for kind, weight in MIX for _ in range(weight)]


def _session(plan: dict) -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    http.verify = plan["ca_file"]
    return http


def _headers(plan: dict, http: requests.Session, user: dict, results: dict, lock: threading.Lock) -> dict | None:
    if not user.get("token"):  # sign in; the token endpoint's own throttle (20/min per address) bounds this
        token = http.post(plan["url"] + "/api/v1/auth/token",
                          json={"email": user["email"], "password": user["password"]}, timeout=30)
        if token.status_code != 200:
            with lock:
                results["errors"].append(f"token {token.status_code}")
            return None
        user["token"] = token.json()["access"]
    return {"Authorization": f"Bearer {user['token']}"}


def one_call(plan: dict, http: requests.Session, user: dict, headers: dict, rng: random.Random, results: dict,
             lock: threading.Lock) -> None:
    base = plan["url"] + "/api/v1/"
    kind = rng.choice(KINDS)
    if kind == "send" and not user.get("connection_id"):
        kind = "list"
    message_id = rng.choice(user["detail_ids"] if kind == "detail" and user.get("detail_ids") else user["message_ids"])
    start = time.perf_counter()
    if kind == "list":
        response = http.get(base + "messages", params={"limit": 50}, headers=headers, timeout=60)
    elif kind == "search":
        response = http.get(base + "messages", params={"q": user["marker"], "limit": 50}, headers=headers,
                            timeout=60)
    elif kind == "detail":
        response = http.get(base + f"messages/{message_id}", headers=headers, timeout=60)
    elif kind == "read":
        response = http.post(base + f"messages/{message_id}/read", json={"unread": rng.random() < 0.5},
                             headers={**headers, "Idempotency-Key": f"{time.time_ns()}-{rng.random()}"},
                             timeout=60)
    elif kind == "send":
        response = http.post(base + "outbox", json={
            "connection": user["connection_id"], "to": [f"friend-{rng.randrange(10**6)}@example.test"],
            "subject": f"{user['marker']} reply {rng.randrange(10**6)}",
            "body_text": f"Load test reply, {user['marker']}."},
            headers={**headers, "Idempotency-Key": f"{time.time_ns()}-{rng.random()}"}, timeout=60)
    else:
        response = http.get(base + f"messages/{rng.choice(user['foreign_ids'])}", headers=headers, timeout=60)
    elapsed = time.perf_counter() - start
    problem, leak = None, None
    expected = 404 if kind == "foreign" else 202 if kind in ("read", "send") else 200
    # The brief's rule for cross-owner data: every user's messages carry a marker of their own, so
    # any other marker anywhere in an answer (a 404's body included) is a leak.
    markers = set(MARKER.findall(response.text)) - {user["marker"]}
    if markers:
        leak = f"{kind} showed {user['email']} the marker(s) {sorted(markers)[:3]}"
    if response.status_code != expected:
        problem = f"{kind} {response.status_code} {response.text[:200]}"
    elif kind in ("list", "search"):
        items = response.json()["results"]
        if not items:
            problem = f"{kind} found none of the user's own messages"
        for item in items:
            # By subject, not by id: sent mail synced back from the Sent folder is the user's too.
            if user["marker"] not in item.get("subject", ""):
                leak = f"{kind} returned {item['id']} to {user['email']}"
    elif kind == "detail":
        item = response.json()
        if item["id"] != message_id or user["marker"] not in item.get("subject", ""):
            leak = f"detail of {message_id} showed another message to {user['email']}"
    elif kind == "send":
        item = response.json()
        if item["connection"] != user["connection_id"] or user["marker"] not in item["subject"]:
            leak = f"send answered with another user's outbox row to {user['email']}"
    with lock:
        results["latency"].setdefault(kind, []).append(elapsed)
        if kind == "send" and not problem:
            results["sent"].append((user["email"], response.json()["id"]))
        if problem:
            results["errors"].append(problem)
        if leak:
            results["leaks"].append(leak)


def run_user(plan: dict, user: dict, results: dict, lock: threading.Lock) -> None:
    http = _session(plan)
    headers = _headers(plan, http, user, results, lock)
    rng = random.Random(user["email"])  # noqa: S311 - a reproducible mix, not a secret
    for _ in range(plan["requests_per_user"] if headers else 0):
        one_call(plan, http, user, headers, rng, results, lock)


def run_client(plan: dict, number: int, deadline: float, results: dict, lock: threading.Lock) -> None:
    http = _session(plan)
    rng = random.Random(number)  # noqa: S311 - a reproducible mix, not a secret
    while time.monotonic() < deadline:
        user = rng.choice(plan["users"])
        headers = _headers(plan, http, user, results, lock)
        if headers:
            one_call(plan, http, user, headers, rng, results, lock)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(round(len(ordered) * fraction)) - 1)]


def main(path: str) -> int:
    with open(path) as handle:
        plan = json.load(handle)
    results: dict = {"latency": {}, "errors": [], "leaks": [], "sent": []}
    lock = threading.Lock()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=plan["threads"]) as pool:
        if plan.get("seconds"):
            deadline = time.monotonic() + plan["seconds"]
            futures = [pool.submit(run_client, plan, n, deadline, results, lock) for n in range(plan["threads"])]
        else:
            futures = [pool.submit(run_user, plan, user, results, lock) for user in plan["users"]]
        for future in futures:
            future.result()
    wall = time.perf_counter() - started
    every = [sample for samples in results["latency"].values() for sample in samples]
    report = {
        "requests": len(every), "wall_seconds": wall, "throughput_rps": len(every) / wall if wall else 0,
        "errors": results["errors"][:20], "error_count": len(results["errors"]),
        "leaks": results["leaks"][:20], "leak_count": len(results["leaks"]), "sent": results["sent"],
        "overall": {"p50_ms": statistics.median(every) * 1000, "p95_ms": percentile(every, 0.95) * 1000}
        if every else {},
        "by_kind": {kind: {"count": len(samples), "p50_ms": statistics.median(samples) * 1000,
                           "p95_ms": percentile(samples, 0.95) * 1000}
                    for kind, samples in sorted(results["latency"].items())},
    }
    print(json.dumps(report))
    return 0 if not report["error_count"] and not report["leak_count"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
