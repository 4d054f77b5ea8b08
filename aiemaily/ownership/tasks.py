"""The one decorator for Celery tasks that touch owned data.

The task's first argument is the owner id; the task body runs in a transaction bound to that owner
and nothing else. Nothing is read from thread-locals or from a previous task.
"""

import functools

from aiemaily.ownership.binding import owner_scope


def owner_task(func):
    @functools.wraps(func)
    def wrapper(owner_id, *args, **kwargs):
        if not owner_id:
            raise ValueError(f"{func.__name__} needs an owner id")
        with owner_scope(owner_id):
            return func(owner_id, *args, **kwargs)

    return wrapper
