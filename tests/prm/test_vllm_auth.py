"""RequireBearerToken, the middleware that guards vLLM's server for the shared PRM.

The middleware is tested as an ASGI app: it wraps a stand-in for vLLM's stack built the way
vLLM builds it (its CORS middleware inside ours, a ``/metrics`` app that answers any method, a
``/health`` route). No vLLM server is started. Every test records which requests reached the
inner app: a refused request must reach none.
"""
import json

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from prpo_openrlhf.prm.client import TOKEN_ENV
from prpo_openrlhf.prm.vllm_serve import CORS_ENV, RequireBearerToken, cors_from_vllm_flags

TOKEN = "s3cret"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PATHS = ("/metrics", "/metrics/", "/metricsx", "/pooling", "/v1/models", "/", "/healthz", "/health/x")
PREFLIGHT = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization"}


def _stack(reached, *, vllm_cors=True):
    """vLLM's app as the middleware sees it: CORS (vLLM's default, every origin) then the routes."""

    async def metrics(scope, receive, send):
        # Like prometheus_client's ASGI app: any method, any sub-path, no websocket support.
        reached.append((scope["type"], scope.get("method"), scope["path"]))
        if scope["type"] != "http":
            raise RuntimeError("the metrics app speaks HTTP only")
        await PlainTextResponse('vllm:model_info{model="/secret/path"} 1')(scope, receive, send)

    async def anything(request):
        reached.append(("http", request.method, request.url.path))
        return PlainTextResponse("app")

    async def health(request):
        reached.append(("http", request.method, "/health"))
        return PlainTextResponse("ok")

    routes = [Route("/health", health), Mount("/metrics", metrics),
              Route("/{rest:path}", anything, methods=list(METHODS))]
    inner = [Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"],
                        allow_headers=["*"])] if vllm_cors else []
    app = Starlette(routes=routes, middleware=inner)
    return TestClient(RequireBearerToken(app), raise_server_exceptions=True)


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.delenv(CORS_ENV, raising=False)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_needs_the_token_on_every_route_but_health(token_env, method):
    reached = []
    client = _stack(reached)
    for path in PATHS:
        r = client.request(method, path)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
    assert reached == []
    # A preflight-looking OPTIONS is refused too while no CORS is configured for us.
    assert client.request("OPTIONS", "/metrics", headers=PREFLIGHT).status_code == 401
    assert reached == []
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.request(method, "/pooling", headers=good).status_code == 200
    assert client.request(method, "/metrics", headers=good).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.request(method, "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert [p for _, _, p in reached] == ["/pooling", "/metrics", "/health"]


@pytest.mark.parametrize("vllm_cors", [True, False])
def test_a_cors_preflight_passes_only_where_configured_and_reaches_no_app(token_env, monkeypatch,
                                                                          vllm_cors):
    monkeypatch.setenv(CORS_ENV, json.dumps({"allowed_origins": ["https://ui.example"],
                                             "allowed_methods": ["POST"],
                                             "allowed_headers": ["authorization"]}))
    reached = []
    client = _stack(reached, vllm_cors=vllm_cors)
    r = client.request("OPTIONS", "/pooling", headers=PREFLIGHT)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://ui.example"
    # An origin CORS does not allow gets no grant; still nothing reaches an app.
    bad = client.request("OPTIONS", "/metrics", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert bad.status_code == 400 and "vllm:" not in bad.text
    # A bare OPTIONS (no Origin / no requested method) is no preflight: it needs the token.
    assert client.request("OPTIONS", "/metrics").status_code == 401
    assert client.request("OPTIONS", "/metrics", headers={"Origin": "https://ui.example"}).status_code == 401
    assert reached == []


def test_websockets_are_refused_cleanly(token_env):
    reached = []
    client = _stack(reached)
    for path in ("/metrics/", "/metrics", "/pooling", "/health"):
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            with pytest.raises(WebSocketDisconnect) as refused:
                with client.websocket_connect(path, headers=headers):
                    pass
            assert refused.value.code == 1008
    assert reached == []


def test_websockets_are_refused_without_a_token_configured(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    reached = []
    with pytest.raises(WebSocketDisconnect):
        with _stack(reached).websocket_connect("/metrics/"):
            pass
    assert reached == []


def test_the_cors_settings_are_read_from_vllm_flags():
    assert cors_from_vllm_flags(["--max-num-seqs", "4"]) is None
    got = cors_from_vllm_flags(["--allowed-origins", '["https://a"]', "--allowed-methods=[\"POST\"]",
                                "--allow-credentials"])
    assert got == {"allowed_origins": ["https://a"], "allowed_methods": ["POST"],
                   "allow_credentials": True}
    with pytest.raises(SystemExit, match="--allowed-origins"):
        cors_from_vllm_flags(["--allowed-origins", "https://a"])
