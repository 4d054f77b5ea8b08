"""One folder's large sync cut into parts that the sync pool's processes store side by side.

Why: an initial sync is CPU-bound on our side (parsing, a key and an encryption per body, sealed
metadata, index hashes: most of a millisecond per message), and one task runs on one core, while
worker-sync runs several processes (Procfile: --concurrency 2) and a deployment adds machines.

How (the sync task that found the new mail coordinates, see mail/sync/imap.py `_sync_in_parts`):
1. the new UIDs are cut into contiguous parts, and the plan (an id, the UIDVALIDITY, each part's
   first and last UID, state, stored count and heartbeat) is written on the folder row;
2. a `mail.tasks.connection_sync_part` task is queued for every part but the first, carrying the
   same lease; the coordinator claims parts too, lowest first, starting with the first;
3. a part is claimed under the folder's row lock, so one process syncs it; its claimant beats after
   every batch, and a part whose beat is older than AIEMAILY_SYNC_PART_STALE_SECONDS (its process
   died; acks_late redelivers the task meanwhile) can be claimed again;
4. once nothing is left to claim, the coordinator waits for the parts others hold, then moves the
   folder's cursor past the last new UID and clears the plan (`plan_finish`).
So nothing waits for a process that is not there (with one process, the coordinator syncs every
part itself), and the cursor ("every UID up to this one is stored") moves only when that is true.
A part synced again after a crash skips the UIDs already stored; rows are unique per UID anyway.

Heartbeats are on the database's clock, so a worker's skewed clock cannot make a live part look
dead or a dead one look alive.
"""

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models.functions import Greatest

from aiemaily.ops.clock import database_now
from aiemaily.ownership.binding import owner_scope
from mail.models import Folder

QUEUED, CLAIMED, DONE = "queued", "claimed", "done"


def split(uids: list[int], *, parts: int, minimum: int) -> list[list[int]]:
    """`uids` (ascending) cut into at most `parts` contiguous runs of at least `minimum` each; one
    run (no cutting) when there are too few, none when there are none."""
    if not uids:
        return []
    count = max(1, min(parts, len(uids) // max(minimum, 1)))
    size = -(-len(uids) // count)
    return [uids[start:start + size] for start in range(0, len(uids), size)]


def _locked_plan(owner_id, folder_id, plan_id: str) -> tuple[Folder | None, dict | None]:
    """The folder row, locked, and its plan if it is still `plan_id` (else None: replaced, finished,
    or the folder is gone). Call inside the owner's binding and a transaction."""
    folder = Folder.objects.for_owner(owner_id).select_for_update().filter(pk=folder_id).first()
    plan = folder.parts if folder is not None else None
    return folder, (plan if plan and plan.get("id") == plan_id else None)


def _save(owner_id, folder_id, plan: dict) -> None:
    Folder.objects.for_owner(owner_id).filter(pk=folder_id).update(parts=plan)


def plan_write(owner_id, folder_id, *, uidvalidity: int, runs: list[list[int]]) -> dict:
    """Start a plan for these runs (replacing any earlier one, whose tasks then find it gone)."""
    plan = {"id": uuid.uuid4().hex, "uidvalidity": uidvalidity,
            "parts": [{"first": run[0], "last": run[-1], "state": QUEUED, "stored": 0, "beat": None, "holder": ""}
                      for run in runs]}
    with owner_scope(owner_id):
        _save(owner_id, folder_id, plan)
    return plan


def plan_read(owner_id, folder_id, plan_id: str) -> dict | None:
    with owner_scope(owner_id):
        folder = Folder.objects.for_owner(owner_id).filter(pk=folder_id).only("parts").first()
    plan = folder.parts if folder is not None else None
    return plan if plan and plan.get("id") == plan_id else None


def stored(plan: dict | None) -> int:
    return sum(part["stored"] for part in plan["parts"]) if plan else 0


def _claimable(part: dict, now, holder: str) -> bool:
    if part["state"] == QUEUED or (part["state"] == CLAIMED and holder and part.get("holder") == holder):
        return True  # queued, or claimed by this same task before (a retry after an outage)
    stale = timedelta(seconds=settings.AIEMAILY_SYNC_PART_STALE_SECONDS)
    return part["state"] == CLAIMED and (part["beat"] is None or now - datetime.fromisoformat(part["beat"]) > stale)


def part_claim(owner_id, folder_id, plan_id: str, index: int | None = None, *,
               holder: str = "") -> tuple[int, dict] | None:
    """Claim part `index` (or, None, the lowest part anyone may claim) of this plan for `holder` (a
    task id): (index, part), or None when another live claimant holds it, it is done, or the plan is gone."""
    with owner_scope(owner_id):
        _, plan = _locked_plan(owner_id, folder_id, plan_id)
        if plan is None:
            return None
        now = database_now()
        candidates = range(len(plan["parts"])) if index is None else [index]
        for n in candidates:
            if 0 <= n < len(plan["parts"]) and _claimable(plan["parts"][n], now, holder):
                plan["parts"][n].update(state=CLAIMED, beat=now.isoformat(), holder=holder)
                _save(owner_id, folder_id, plan)
                return n, plan["parts"][n]
    return None


def _update(owner_id, folder_id, plan_id: str, index: int, **changes) -> dict | None:
    with owner_scope(owner_id):
        _, plan = _locked_plan(owner_id, folder_id, plan_id)
        if plan is None:
            return None
        part = plan["parts"][index]
        part["stored"] += changes.pop("stored", 0)  # rows written, whoever holds the part now
        if part["state"] != DONE:  # a part another process finished stays finished
            part.update(changes)
        _save(owner_id, folder_id, plan)
        return plan


def part_beat(owner_id, folder_id, plan_id: str, index: int, *, stored: int) -> dict | None:
    """A batch of this part is stored: count it and show the claimant is alive. The plan, or None if gone."""
    return _update(owner_id, folder_id, plan_id, index, stored=stored, beat=database_now().isoformat())


def part_done(owner_id, folder_id, plan_id: str, index: int) -> None:
    _update(owner_id, folder_id, plan_id, index, state=DONE)


def part_release(owner_id, folder_id, plan_id: str, index: int, *, holder: str = "") -> None:
    """Give back a part `holder` holds (it could not sync it): the next free process claims it at once."""
    with owner_scope(owner_id):
        _, plan = _locked_plan(owner_id, folder_id, plan_id)
        if plan is None:
            return
        part = plan["parts"][index]
        if part["state"] == CLAIMED and part.get("holder", "") == holder:
            part.update(state=QUEUED, beat=None, holder="")
            _save(owner_id, folder_id, plan)


def plan_finish(owner_id, folder_id, plan_id: str) -> int | None:
    """If every part is done: move the cursor past the last part and clear the plan. None while parts
    are left; otherwise the plan is over and this is the number of messages its parts stored (0 for
    a plan gone: replaced by a later sync, its folder renumbered or deleted)."""
    with owner_scope(owner_id):
        folder, plan = _locked_plan(owner_id, folder_id, plan_id)
        if plan is None:
            return 0
        if folder.uidvalidity is not None and folder.uidvalidity != plan["uidvalidity"]:
            _save(owner_id, folder_id, {})  # the folder was renumbered meanwhile: these UIDs mean nothing now
            return 0
        if any(part["state"] != DONE for part in plan["parts"]):
            return None
        last = max(part["last"] for part in plan["parts"])
        Folder.objects.for_owner(owner_id).filter(pk=folder_id).update(last_uid=Greatest("last_uid", last), parts={})
        return stored(plan)
