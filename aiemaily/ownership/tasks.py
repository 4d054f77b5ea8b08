"""The one decorator for Celery tasks that touch owned data.

The owner id comes from the task's `owner_id` keyword argument or, failing that, its first
positional argument; the body runs in a transaction bound to that owner and nothing else. Nothing
is read from thread-locals or left over from a previous task.
"""

import functools

from aiemaily.ownership.binding import owner_scope


def owner_task(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        owner_id = kwargs.get("owner_id") if "owner_id" in kwargs else (args[0] if args else None)
        if not owner_id:
            raise ValueError(f"{func.__name__} needs an owner id")
        with owner_scope(owner_id):
            return func(*args, **kwargs)

    return wrapper
