"""The mail app's web zone (pages and their JSON helpers); runs in the web process."""
