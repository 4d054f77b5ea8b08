"""The user: a UUID primary key (it is every owned row's owner id) and the e-mail address as login."""

import uuid

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from aiemaily.ownership.models import OwnedModel


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create(self, email, password, **fields):
        if not email:
            raise ValueError("an e-mail address is required")
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **fields):
        fields.setdefault("is_staff", False)
        fields.setdefault("is_superuser", False)
        return self._create(email, password, **fields)

    def create_superuser(self, email, password=None, **fields):
        fields.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **fields)

    def get_by_natural_key(self, email):
        return self.get(email__iexact=email)


class User(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField("e-mail address", max_length=254, unique=True)
    display_name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # Set when the owner opened the signed link mailed to `email` (accounts/verification.py); only
    # verified addresses can be found by sharing and receive a delegated thread.
    email_verified_at = models.DateTimeField(null=True, blank=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        constraints = [models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique")]

    def __str__(self):
        return self.email


class RefreshTokenRecord(OwnedModel):
    """One issued API refresh token, known only by its SHA-256 (the token itself is never stored).

    Replaces simplejwt's blacklist app, whose outstanding-token table kept every refresh token in
    plain text in a table without row-level security. A token is single-use: refreshing marks it
    `used_at`; a used or revoked token coming back is a reuse, and revokes the owner's whole set.
    Rows are owned (RLS): the refresh path binds the owner from the token's verified `sub` claim.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Set when the owner revoked this one token on the sessions page: presenting it again is then
    # refused quietly, not treated as reuse (which would sign out every other API client too).
    revoked_by_owner = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["owner", "revoked_at"], name="accounts_refresh_owner_live")]


class BrowserSession(OwnedModel):
    """One signed-in browser session, so the owner can see where they are signed in and end any of them.

    Django's session table cannot answer "which sessions are this user's" (it holds no user column,
    and has no row-level security). This owned row is made at sign-in; its id is kept inside the
    server-side session data, so the session key itself is stored nowhere here. Ending the row ends
    the session: SessionLedgerMiddleware signs that browser out on its next request.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    # A summary for recognition ("Chrome on Linux"), never the whole header; the address only as a
    # network prefix (/24, /48): enough to tell home from elsewhere, less to track a person with.
    user_agent = models.CharField(max_length=80, blank=True)
    ip_prefix = models.CharField(max_length=64, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "ended_at"], name="accounts_session_owner_live")]
