"""The FastAPI application, laid out as FastAPI's "bigger applications": ``create_app`` only wires
the parts together.

- :mod:`.routers.oauth` -- Flinks OAuth (``/api/v1``: token, providers, authorize, revoke)
- :mod:`.routers.fdx` -- FDX 5 data (``/api/fdx/5``) and signed statement files (``/_files``)
- :mod:`.routers.admin` -- test hooks (``/_admin``) and the index (``/``)
- :mod:`.dependencies` -- the :class:`~.state.Sandbox` dependency and the shared request checks
- :mod:`.middleware` -- correlation headers, counters, latency, rate limit, faults, id aliases
- :mod:`.responses` -- JSON bytes, FDX errors, offsets, exception handlers
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException

from .middleware import SandboxMiddleware
from .responses import Denied, denied_handler, http_error_handler, knob_error_handler
from .routers import admin, fdx, oauth
from .state import KnobError, Sandbox


def create_app(sandbox: Sandbox) -> FastAPI:
    """Build the ASGI app serving ``sandbox``."""
    app = FastAPI(title="Flinks Open Banking sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = sandbox
    app.state.page_cache = fdx.PageCache()
    app.add_exception_handler(Denied, denied_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(KnobError, knob_error_handler)
    app.include_router(oauth.router)
    app.include_router(fdx.router)
    app.include_router(fdx.files)
    app.include_router(admin.router)
    app.include_router(admin.index)
    app.add_middleware(SandboxMiddleware, sandbox=sandbox)
    return app
