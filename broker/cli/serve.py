"""``broker serve``: one front process under uvicorn, draining its streams on SIGTERM."""

from __future__ import annotations

import argparse
import functools
import gc
import logging

from broker.core.settings import Settings, redacted_url


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from broker.core.catalogue import CatalogueError
    from broker.engine import checks
    from broker.engine.connections import wait_until_reachable
    from broker.front.app import create_app
    from broker.front.http.server import BoundedHttpToolsProtocol, HttpLimits
    from broker.front.security.addresses import proxy_options
    from broker.front.security.tokens import SecurityConfigError

    try:
        app = create_app(settings)
        proxies = proxy_options(settings)
    except CatalogueError as exc:
        raise SystemExit(f"model catalogue: {exc}") from None
    except SecurityConfigError as exc:
        raise SystemExit(f"broker serve: {exc}") from None

    wait_until_reachable(settings, "broker serve")
    from broker.cli import version

    # A log line, not a print: with BROKER_LOG_FORMAT=json every line on stderr is JSON.
    logging.getLogger("broker.serve").info(
        "broker serve %s: http://%s:%d, Redis %s%s, auth=%s",
        version(),
        host,
        port,
        redacted_url(settings.redis_url),
        " (cluster)" if settings.redis_cluster else "",
        settings.auth,
    )

    class DrainingServer(uvicorn.Server):
        """Ends every SSE stream on SIGTERM/SIGINT so clients reconnect to another front at once."""

        def handle_exit(self, sig: int, frame: object) -> None:
            app.state.drain()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    # Thousands of long-lived connections make a full collection slow (about 1 s at 10,000
    # clients): collect the young generations less often, and never rescan start-up objects.
    gc.set_threshold(20_000, 50, 100)
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        # uvicorn's httptools protocol, with bounded request heads and idle connections.
        http=functools.partial(
            BoundedHttpToolsProtocol,
            limits=HttpLimits.from_settings(settings),
            on_refused=app.state.metrics.refused,
        ),
        timeout_keep_alive=settings.idle_connection_seconds,  # type: ignore[arg-type]
        lifespan="on",
        access_log=False,  # the broker logs its own (broker.access)
        log_config=None,  # uvicorn's lines go through the broker's format too (BROKER_LOG_FORMAT)
        log_level="warning",
        # Streams end at once on drain; this bounds any other request still running.
        timeout_graceful_shutdown=5,
        backlog=4096,
        # X-Forwarded-For and -Proto, believed from BROKER_TRUSTED_PROXIES only.
        **proxies,
    )
    checks.warn_at_start(settings, "broker serve", worker=False)
    DrainingServer(config).run()


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "serve",
        help="run one front process (HTTP and SSE)",
        description="Run one front process: the HTTP API, the SSE streams, the chat page and\n"
        "/docs. Stateless: run as many as you like against one Redis (BROKER_REDIS_URL).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    sub.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    sub.set_defaults(run=lambda args, settings: serve(settings, args.host, args.port))
