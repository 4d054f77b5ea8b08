"""Shared REST API pieces: authentication that binds the owner, deny-by-default, error envelope."""
