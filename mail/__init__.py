"""Mail connections, providers, sync, messages and actions."""
