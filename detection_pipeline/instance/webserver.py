"""The Dagster webserver as this product starts it (`up`, `webserver`): Dagster's own app,
behind the rules that keep a hostile web page from using a logged-in browser against it.

Dagster's webserver runs a GraphQL query given in the URL, for GET and for any POST whose
Content-Type is not JSON: a page on any site could make an administrator's browser launch,
terminate or delete runs (a link, an image, a form). The shipped nginx config refuses those
requests (deploy/nginx); the same rules apply here, so a deployment without that proxy, or a
local user's browser, is not open to them either:

- a request whose `Origin` is not this server's, or whose `Sec-Fetch-Site` says another site
  made it, is refused, WebSocket handshakes included; following a link to a page still works;
- GraphQL is taken from a JSON body only: no query in the URL (the UI's `?op=NAME` is allowed);
- a request that is not GET or HEAD must say `Content-Type: application/json`;
- no page may show the UI in a frame (clickjacking).
"""

import argparse
import asyncio
import contextlib
import urllib.parse

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..process_group import end_with_supervisor

READ_METHODS = {"GET", "HEAD"}
# What the UI puts in /graphql URLs: the operation's name, for people reading logs.
GRAPHQL_URL_PARAMETERS = {"op"}
FRAMING_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
]


def _origin_of(scope: Scope, headers: dict[str, str]) -> str:
    """This server's origin as the browser sees it (behind a proxy: as the proxy says)."""
    scheme = headers.get("x-forwarded-proto") or scope.get("scheme", "http")
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}://{headers.get('host', '')}"


def refusal(scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
    """Why the request is refused (HTTP status, message), or None when it may pass."""
    method = scope.get("method", "GET")
    origin = headers.get("origin")
    if origin is not None and origin != _origin_of(scope, headers):
        return 403, f"cross-site request refused: it comes from {origin}"
    navigating = method == "GET" and headers.get("sec-fetch-mode") == "navigate"
    if headers.get("sec-fetch-site") in ("cross-site", "same-site") and not navigating:
        return 403, "cross-site request refused: another site's page sent it"
    if scope["type"] != "http":
        return None
    if scope["path"].endswith("/graphql"):
        given = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"), True)
        if set(given) - GRAPHQL_URL_PARAMETERS:
            return 400, "GraphQL is taken from a JSON POST body only, not from the URL"
    if method not in READ_METHODS:
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return 415, f"{method} requests must be Content-Type: application/json"
    return None


class SameSiteOnly:
    """ASGI middleware applying the rules above to `app`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refused = refusal(scope, headers)
        if refused and scope["type"] == "websocket":
            # Closing before accepting answers the handshake with 403.
            return await send({"type": "websocket.close", "code": 1008})
        if refused:
            status, message = refused
            response = PlainTextResponse(message, status_code=status)
            return await self._with_framing_headers(response, scope, receive, send)
        return await self._with_framing_headers(self.app, scope, receive, send)

    @staticmethod
    async def _with_framing_headers(app, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_framed(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *FRAMING_HEADERS]}
            await send(message)

        await app(scope, receive, send_framed if scope["type"] == "http" else send)


@contextlib.asynccontextmanager
async def _quiet_shutdown(app):
    # uvicorn cancels the lifespan on Ctrl-C: an ordinary stop, not an error (as Dagster's CLI).
    with contextlib.suppress(asyncio.CancelledError):
        yield


def main(argv: list[str] | None = None) -> None:
    """`python -m detection_pipeline.instance.webserver -w WORKSPACE [-h HOST] [-p PORT]
    [--read-only] [--path-prefix PREFIX]`: Dagster's webserver (as `dagster-webserver` with
    these options starts it) behind SameSiteOnly."""
    import uvicorn
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_webserver.app import create_app_from_workspace_process_context
    from dagster_webserver.cli import (
        DEFAULT_DB_STATEMENT_TIMEOUT,
        DEFAULT_POOL_MAX_OVERFLOW,
        DEFAULT_POOL_RECYCLE,
    )
    from dagster_webserver.version import __version__

    parser = argparse.ArgumentParser(prog="detection_pipeline.instance.webserver", add_help=False)
    parser.add_argument("-w", dest="workspace", required=True)
    parser.add_argument("-h", dest="host", default="127.0.0.1")
    parser.add_argument("-p", dest="port", type=int, default=3000)
    parser.add_argument("--read-only", action="store_true")
    parser.add_argument("--path-prefix", default="")
    options = parser.parse_args(argv)
    with DagsterInstance.get() as instance:
        instance.optimize_for_webserver(
            DEFAULT_DB_STATEMENT_TIMEOUT, DEFAULT_POOL_RECYCLE, DEFAULT_POOL_MAX_OVERFLOW
        )
        with WorkspaceProcessContext(
            instance,
            WorkspaceFileTarget(paths=[options.workspace]),
            version=__version__,
            read_only=options.read_only,
        ) as context:
            app = create_app_from_workspace_process_context(
                context, options.path_prefix, lifespan=_quiet_shutdown
            )
            print(
                f"Serving the Dagster webserver on http://{options.host}:{options.port}"
                f"{options.path_prefix}",
                flush=True,
            )
            uvicorn.run(
                SameSiteOnly(app), host=options.host, port=options.port, log_level="warning"
            )


if __name__ == "__main__":
    end_with_supervisor()
    main()
