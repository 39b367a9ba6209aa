"""`kriten` (what `make run` starts): the four services in one process on one port.

The api app is the root; the ingress's run endpoint is mounted on its path, and the
dispatcher and collector apps are mounted under `/_dispatcher` and `/_collector` so
their loops run as background tasks of the same process (and their health endpoints
stay reachable). Nothing here is used in production, where each service runs alone.
"""

from __future__ import annotations

from aiohttp import web

from kriten_api.app import create_app as create_api_app
from kriten_api.settings import ApiSettings
from kriten_collector.app import create_app as create_collector_app
from kriten_collector.settings import CollectorSettings
from kriten_common.http import METRICS_REGISTRY, READINESS_CHECKS
from kriten_common.paths import RUN_PREFIX
from kriten_common.service import load_settings, run_service
from kriten_dispatcher.app import create_app as create_dispatcher_app
from kriten_dispatcher.settings import DispatcherSettings
from kriten_ingress.app import create_run_app
from kriten_ingress.settings import IngressSettings


def create_app(
    api: ApiSettings,
    ingress: IngressSettings,
    dispatcher: DispatcherSettings,
    collector: CollectorSettings,
) -> web.Application:
    app = create_api_app(api)
    app.add_subapp(
        RUN_PREFIX, create_run_app(ingress, app[METRICS_REGISTRY], app[READINESS_CHECKS])
    )
    app.add_subapp("/_dispatcher", create_dispatcher_app(dispatcher))
    app.add_subapp("/_collector", create_collector_app(collector))
    return app


def main() -> None:
    api = load_settings(ApiSettings, "kriten")
    # One port for everything: the api's (KRITEN_PORT, default 8080).
    ingress = load_settings(lambda: IngressSettings(host=api.host, port=api.port), "kriten")
    dispatcher = load_settings(lambda: DispatcherSettings(host=api.host, port=api.port), "kriten")
    collector = load_settings(lambda: CollectorSettings(host=api.host, port=api.port), "kriten")
    run_service(lambda: create_app(api, ingress, dispatcher, collector), api, "kriten")


if __name__ == "__main__":
    main()
