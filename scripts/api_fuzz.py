#!/usr/bin/env python3
"""Fuzz the REST API as an outside client would: schemathesis, every check, the stateful phase, two users.

    FUZZ_USERS='[{"email": "...", "password": "..."}, {"email": "...", "password": "..."}]' \\
        .venv/bin/python scripts/api_fuzz.py https://aiemaily.example [--max-examples 10] [--seed N]

The schema is the one the server serves (/api/schema/). Both users sign in through
/api/v1/auth/token (schemathesis's Web Fuzzing Commons login, renewed on a 401), and every check
runs, `object_level_authorization` included: what one user reads, the other must not get. Two runs,
each bounded by --max-examples per operation: a fixed seed (the same cases every time) and a random
one, printed so a failure can be replayed with --seed. Exit status 0 only if neither run failed.

It sends thousands of requests, malformed ones too, and creates, changes and deletes objects of
both users (never the accounts: DELETE /account needs the password, which is never offered).
Point it at a staging deployment with two throwaway accounts, never at real users' data.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXED_SEED = 20261201
CONFIG = ROOT / "scripts" / "schemathesis.toml"


def auth_document(users: list[dict]) -> dict:
    """A Web Fuzzing Commons auth file: each user signs in at auth/token; the access token is the Bearer."""
    return {
        "schemaVersion": "1.0",
        "auth": [
            {
                "name": f"user{n}",
                "loginEndpointAuth": {
                    "endpoint": "/api/v1/auth/token",
                    "verb": "POST",
                    "contentType": "application/json",
                    "payloadUserPwd": {"username": user["email"], "usernameField": "email",
                                       "password": user["password"], "passwordField": "password"},
                    "token": {"extractFrom": "body", "extractSelector": "/access", "sendIn": "header",
                              "sendName": "Authorization", "sendTemplate": "Bearer {token}"},
                },
            }
            for n, user in enumerate(users, start=1)
        ],
    }


def run_once(url: str, auth_file: str, seed: int, max_examples: int, report_dir: Path | None) -> int:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
        f"{url.rstrip('/')}/api/schema/", "--url", url.rstrip("/"),
        "--auth-wfc", auth_file, "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1",
        "--generation-database", "none", "--request-timeout", "30", "--no-color",
    ]
    if report_dir is not None:
        command += ["--report", "junit", "--report-dir", str(report_dir / f"seed-{seed}")]
    print(f"[fuzz] seed {seed}: {' '.join(command[2:])}", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "scripts"),
                                                                   os.environ.get("PYTHONPATH")])))
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the site's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_MAX_EXAMPLES", "10")))
    parser.add_argument("--seed", type=int, help="replay one run with this seed (no fixed/random pair)")
    parser.add_argument("--report-dir", type=Path, help="write a JUnit report per seed here")
    args = parser.parse_args(argv)
    users = json.loads(os.environ["FUZZ_USERS"])
    if len(users) < 2:
        parser.error("FUZZ_USERS must list two users: the cross-user check needs a second one")
    seeds = [args.seed] if args.seed is not None else [FIXED_SEED, random.SystemRandom().randrange(1, 2**31)]
    if args.seed is None:
        print(f"[fuzz] seeds: fixed {seeds[0]}, random {seeds[1]} (replay with --seed)", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="fuzz-auth-") as auth_file:
        os.chmod(auth_file.name, 0o600)  # the users' passwords
        json.dump(auth_document(users), auth_file)
        auth_file.flush()
        failed = [seed for seed in seeds
                  if run_once(args.url, auth_file.name, seed, args.max_examples, args.report_dir) != 0]
    if failed:
        print(f"[fuzz] FAILED with seed(s) {', '.join(map(str, failed))}", flush=True)
        return 1
    print(f"[fuzz] no failure with seed(s) {', '.join(map(str, seeds))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
