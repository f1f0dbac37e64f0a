"""Base models: where they come from, how they load, and how an adapter is merged into one."""
