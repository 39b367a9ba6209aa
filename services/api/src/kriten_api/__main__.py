"""`kriten-api`: runs the api service alone (production)."""

from __future__ import annotations

from kriten_api.app import create_app
from kriten_api.settings import ApiSettings
from kriten_common.service import load_settings, run_service


def main() -> None:
    settings = load_settings(ApiSettings, "api")
    run_service(lambda: create_app(settings), settings, "api")


if __name__ == "__main__":
    main()
