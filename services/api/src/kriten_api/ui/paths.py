"""Where the console is served: every page and asset under one prefix."""

UI_BASE = "/ui"
STATIC = f"{UI_BASE}/static"
