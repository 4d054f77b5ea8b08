#!/usr/bin/env python3
"""A bounded load run against a deployment, from its own process: `loadgen.py PLAN.json` prints JSON.

PLAN: {"url", "ca_file", "threads", "requests_per_user", "users": [{"email", "password" or "token",
"marker", "message_ids", "foreign_ids"}]}. Each user signs in for a token (unless given one), then
runs a mix of list, search, detail and mark-read calls. Every answer is checked for cross-owner
data: listed and shown messages must be the user's own (ids they own, subjects with their
marker), and a probe of another user's message id must be 404. Anything else counts as an error
or a leak. Used by benchmarks/bench_prod_sim_load.py; works against any deployment whose users
follow the plan.
"""

import json
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

MIX = [("list", 40), ("search", 20), ("detail", 20), ("read", 10), ("foreign", 10)]


def _session(plan: dict) -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    http.verify = plan["ca_file"]
    return http


def run_user(plan: dict, user: dict, results: dict, lock: threading.Lock) -> None:
    http = _session(plan)
    base = plan["url"] + "/api/v1/"
    access = user.get("token")
    if not access:  # sign in; the token endpoint's own throttle (20/min per address) bounds this
        token = http.post(base + "auth/token", json={"email": user["email"], "password": user["password"]},
                          timeout=30)
        if token.status_code != 200:
            with lock:
                results["errors"].append(f"token {token.status_code}")
            return
        access = token.json()["access"]
    headers = {"Authorization": f"Bearer {access}"}
    own = set(user["message_ids"])
    rng = random.Random(user["email"])  # noqa: S311 - a reproducible mix, not a secret
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    for _ in range(plan["requests_per_user"]):
        kind = rng.choice(kinds)
        message_id = rng.choice(user["message_ids"])
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
        else:
            response = http.get(base + f"messages/{rng.choice(user['foreign_ids'])}", headers=headers, timeout=60)
        elapsed = time.perf_counter() - start
        problem, leak = None, None
        expected = 404 if kind == "foreign" else 202 if kind == "read" else 200
        if response.status_code != expected:
            problem = f"{kind} {response.status_code} {response.text[:200]}"
        elif kind in ("list", "search"):
            items = response.json()["results"]
            if kind == "search" and not items:
                problem = "search found none of the user's own messages"
            for item in items:
                if item["id"] not in own or user["marker"] not in item.get("subject", ""):
                    leak = f"{kind} returned {item['id']} to {user['email']}"
        elif kind == "detail":
            item = response.json()
            if item["id"] != message_id or user["marker"] not in item.get("subject", ""):
                leak = f"detail of {message_id} showed another message to {user['email']}"
        with lock:
            results["latency"].setdefault(kind, []).append(elapsed)
            if problem:
                results["errors"].append(problem)
            if leak:
                results["leaks"].append(leak)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(round(len(ordered) * fraction)) - 1)]


def main(path: str) -> int:
    with open(path) as handle:
        plan = json.load(handle)
    results: dict = {"latency": {}, "errors": [], "leaks": []}
    lock = threading.Lock()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=plan["threads"]) as pool:
        for future in [pool.submit(run_user, plan, user, results, lock) for user in plan["users"]]:
            future.result()
    wall = time.perf_counter() - started
    every = [sample for samples in results["latency"].values() for sample in samples]
    report = {
        "requests": len(every), "wall_seconds": wall, "throughput_rps": len(every) / wall if wall else 0,
        "errors": results["errors"][:20], "error_count": len(results["errors"]),
        "leaks": results["leaks"][:20], "leak_count": len(results["leaks"]),
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
