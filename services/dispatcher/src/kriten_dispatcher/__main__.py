"""`kriten-dispatcher`: runs the dispatcher service alone (production)."""

from __future__ import annotations

from kriten_common.service import load_settings, run_service
from kriten_dispatcher.app import create_app
from kriten_dispatcher.settings import DispatcherSettings


def main() -> None:
    settings = load_settings(DispatcherSettings, "dispatcher")
    run_service(lambda: create_app(settings), settings, "dispatcher")


if __name__ == "__main__":
    main()
