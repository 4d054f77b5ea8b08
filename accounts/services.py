"""Writes of the accounts app."""

import logging
from datetime import timedelta

from celery import chain
from django.db import transaction
from django.utils import timezone

from accounts.api.serializers import revoke_all_refresh_tokens
from accounts.browser_sessions import SESSION_ROW_KEY, ip_prefix, user_agent_summary
from accounts.models import BrowserSession, RefreshTokenRecord, User
from accounts.refresh_tokens import refresh_revoke_one
from accounts.tasks import account_purge
from aiemaily.ownership.binding import owner_scope
from aiemaily.security.client_ip import client_ip
from billing.services import billing_account_close
from mail.models import Connection
from secrets_vault.queue import oauth_revoke_for_deletion, owner_shred

logger = logging.getLogger(__name__)
security_log = logging.getLogger("aiemaily.security")


def account_delete(*, user: User) -> None:
    """Close the account now; revoke provider grants, destroy its keys, then its data, in the background.

    Order matters (crypto-shredding): worker-vault revokes OAuth grants at the providers (it needs the
    DEKs to read the refresh tokens), then destroys the user's DEKs; account_purge destroys their
    storage keys, so every ciphertext that might survive somewhere (a backup, a replica) is noise;
    only then are the rows and stored objects deleted. A revocation that fails is recorded and
    never stops the chain (oauth_revoke_for_deletion). Sign-in stops at once.
    """
    user.is_active = False
    user.save(update_fields=["is_active"])
    revoke_all_refresh_tokens(user.pk)
    owner_id = str(user.pk)
    # Grants at Google/Microsoft are revoked while the vault can still open the refresh tokens.
    revocations = [
        oauth_revoke_for_deletion.si(owner_id, str(c.pk), c.provider, str(c.oauth_secret_id))
        for c in Connection.objects.for_owner(user).filter(oauth_secret__isnull=False)
    ]
    # The Stripe customer is closed by billing's own task, outside this chain: Stripe being down
    # is recorded there and retried, and never holds up the shredding.
    billing_account_close(owner=user)
    steps = [*revocations, owner_shred.si(owner_id), account_purge.si(owner_id)]
    transaction.on_commit(lambda: chain(*steps).apply_async())
    logger.info("account %s closed; shredding queued", owner_id, extra={"event": "account_delete"})


def password_changed(*, user: User, keep_session_id=None) -> int:
    """After a password change or reset: every API refresh token of the account is revoked, and every
    access token and browser session stops working (both carry a digest of the password hash, which
    just changed: SIMPLE_JWT CHECK_REVOKE_TOKEN, Django's session auth hash). The page that made the
    change keeps its own session only through update_session_auth_hash, and its ledger row
    (`keep_session_id`); the other rows are ended so the sessions page shows what is true.
    Returns tokens revoked."""
    revoked = revoke_all_refresh_tokens(user.pk)
    browser_session_end_others(owner=user, keep_session_id=keep_session_id)
    security_log.info("password changed; revoked %d refresh tokens", revoked,
                      extra={"event": "password_changed", "owner_id": str(user.pk)})
    return revoked


# --- the browser-session ledger and owner-initiated token revocation (the sessions page) ----------

# last_seen_at is a hint for the owner, not an audit trail: writing it once a minute, not on every
# request, keeps signed-in browsing from costing a write per page.
LAST_SEEN_EVERY = timedelta(seconds=60)


def browser_session_open(*, request, user) -> BrowserSession:
    """Record a new signed-in session and remember its row in the (server-side) session data."""
    with owner_scope(user.pk):
        previous = request.session.get(SESSION_ROW_KEY)
        if previous:
            # Signing in again in a signed-in browser keeps the session data (Django cycles the key
            # only): the old row would linger in the list as a session nobody has.
            BrowserSession.objects.for_owner(user).filter(pk=previous, ended_at__isnull=True).update(
                ended_at=timezone.now())
        row = BrowserSession.objects.create(
            owner=user, user_agent=user_agent_summary(request.META.get("HTTP_USER_AGENT", "")),
            ip_prefix=ip_prefix(client_ip(request)))
    request.session[SESSION_ROW_KEY] = str(row.pk)
    return row


def browser_session_check(*, request) -> bool:
    """Is the signed-in session of `request` still wanted? False: its row was ended (or is gone), and
    the caller signs the browser out. A session from before the ledger gets its row now. The caller
    has bound the request's user as owner (SessionLedgerMiddleware, after OwnerScopeMiddleware)."""
    user = request.user
    row_id = request.session.get(SESSION_ROW_KEY)
    if row_id is None:
        browser_session_open(request=request, user=user)
        return True
    # Runs on every signed-in request, inside the request's transaction where OwnerScopeMiddleware
    # already bound this user: no owner_scope of its own (that would cost a savepoint and three
    # statements per request). One SELECT; an UPDATE at most once a minute.
    row = BrowserSession.objects.for_owner(user).filter(pk=row_id).only("ended_at", "last_seen_at").first()
    if row is None or row.ended_at is not None:
        return False
    now = timezone.now()
    if now - row.last_seen_at >= LAST_SEEN_EVERY:
        BrowserSession.objects.for_owner(user).filter(pk=row_id).update(last_seen_at=now)
    return True


def browser_session_end(*, owner, session_id) -> bool:
    """End one session of the owner (idempotent). Its browser is signed out on its next request.
    False when it was already ended or is not the owner's."""
    with owner_scope(getattr(owner, "pk", owner)):
        ended = BrowserSession.objects.for_owner(owner).filter(pk=session_id, ended_at__isnull=True).update(
            ended_at=timezone.now())
    if ended:
        security_log.info("browser session ended", extra={"event": "session_ended", "owner_id": str(
            getattr(owner, "pk", owner))})
    return ended == 1


def browser_session_end_others(*, owner, keep_session_id) -> int:
    """End every session of the owner but `keep_session_id` (None: every one). Returns how many."""
    with owner_scope(getattr(owner, "pk", owner)):
        live = BrowserSession.objects.for_owner(owner).filter(ended_at__isnull=True)
        if keep_session_id is not None:
            live = live.exclude(pk=keep_session_id)
        return live.update(ended_at=timezone.now())


def sign_out_everywhere_else(*, owner, keep_session_id) -> tuple[int, int]:
    """"Sign out everywhere else": every other browser session ends and every API refresh token is
    revoked, as the owner's own choice (so a client presenting one later is refused quietly).
    Returns (sessions ended, tokens revoked)."""
    sessions = browser_session_end_others(owner=owner, keep_session_id=keep_session_id)
    with owner_scope(owner.pk):
        tokens = RefreshTokenRecord.objects.for_owner(owner).filter(
            revoked_at__isnull=True, used_at__isnull=True).update(revoked_at=timezone.now(), revoked_by_owner=True)
    security_log.info("signed out everywhere else: %d sessions, %d refresh tokens", sessions, tokens,
                      extra={"event": "sign_out_everywhere_else", "owner_id": str(owner.pk)})
    return sessions, tokens


def refresh_token_revoke(*, owner, record_id) -> bool:
    """The owner revokes one API refresh token (idempotent). Its access tokens (5 minutes) run out on
    their own; the refresh token is refused from now on."""
    with owner_scope(owner.pk):
        revoked = refresh_revoke_one(owner_id=owner.pk, record_id=record_id)
    if revoked:
        security_log.info("refresh token revoked by its owner",
                          extra={"event": "refresh_token_revoked", "owner_id": str(owner.pk)})
    return revoked
