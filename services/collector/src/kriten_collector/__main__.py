"""`kriten-collector`: runs the collector service alone (production)."""

from __future__ import annotations

from kriten_collector.app import create_app
from kriten_collector.settings import CollectorSettings
from kriten_common.service import load_settings, run_service


def main() -> None:
    settings = load_settings(CollectorSettings, "collector")
    run_service(lambda: create_app(settings), settings, "collector")


if __name__ == "__main__":
    main()
