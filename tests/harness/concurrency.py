"""Running the same work in several threads at once, as several workers or requests would."""

import threading

from django.db import connections


def run_together(work, count: int) -> tuple[list, list]:
    """Runs `work` in `count` threads released at the same moment; returns what the calls returned and
    what they raised. Each thread closes the database connections it opened."""
    barrier, results, errors = threading.Barrier(count), [], []

    def run():
        try:
            barrier.wait()
            results.append(work())
        except Exception as exc:  # noqa: BLE001 - returned to the test, which asserts on it
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)  # generous for two busy cores; a thread still running is missing from `results`
    return results, errors
