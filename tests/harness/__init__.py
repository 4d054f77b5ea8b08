"""The test harness: every server and system helper the suite (and `make bench`) starts or uses, in
one place: mail servers (Dovecot, aiosmtpd), the fake OAuth, Gmail, Graph, Stripe and AI provider
servers, TLS and nginx, SoftHSM2 and moto, PgBouncer, Chromium, real role processes, factories.

`system` holds the one system package list, `require_tool`, `free_port` and the PostgreSQL and Redis
starters; scripts/testenv.py (`make test`) uses it to install once and start the servers, and the
fixtures here use it to check their tools and take ports.
"""
