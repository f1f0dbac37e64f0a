"""Rows in: reading files and hubs, checking them, and turning them into chat records."""
