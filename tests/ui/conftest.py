"""The console's tests: the api app in-process (fast), and the services as processes
driven by a real browser (`test_console_in_browser`). The in-process fixtures are the
api tests' own."""

from tests.api.conftest import api, api_settings, build_api, published

__all__ = ["api", "api_settings", "build_api", "published"]
