"""`kriten-ingress`: runs the ingress service alone (production)."""

from __future__ import annotations

from kriten_common.service import load_settings, run_service
from kriten_ingress.app import create_app
from kriten_ingress.settings import IngressSettings


def main() -> None:
    settings = load_settings(IngressSettings, "ingress")
    run_service(lambda: create_app(settings), settings, "ingress")


if __name__ == "__main__":
    main()
