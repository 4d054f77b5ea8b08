"""Idempotency keys for mutating API calls: a retried request replays its first response.

The storage and the claim live here (models, services, the reaper task); the HTTP side that every
/api/v1/ view gets is aiemaily/api/idempotency.py. docs/security-model.md, "Idempotency", explains both.
"""
