"""The web console: a page at `/` (its files under `/console/`) that drives the client API from a browser.

Plain HTML, CSS and JavaScript shipped inside the package (`api/static/`), with the Socket.IO client bundled:
no build step, no CDN, nothing fetched from elsewhere. The page keeps the API key in the tab's sessionStorage
and uses the same `/whatsapp` REST routes and Socket.IO namespace as any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

ASSETS = Path(__file__).with_name("static")
ASSETS_PATH = "/console"

# the console's own policy (the API's answers carry none): its files and the gateway only, QR codes as data: URLs,
# messages' files (images, video and audio players) by their signed links on the gateway, contacts' profile
# pictures from WhatsApp's picture server (where `pictureUrl` points)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https://pps.whatsapp.net; "
    "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",  # small files that change with each release: revalidated (cheap, by ETag)
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class ConsoleFiles(StaticFiles):
    """The console's files, served with conditional GET and the headers above."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        return response


def mount(app: FastAPI) -> None:
    """Serve the console on `app`: the page at `/`, its stylesheet and scripts at `/console/`."""
    files = ConsoleFiles(directory=ASSETS)

    async def console_page(request: Request) -> Response:
        """The console's page."""
        return await files.get_response("index.html", request.scope)

    app.add_api_route("/", console_page, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount(ASSETS_PATH, files, name="console")
