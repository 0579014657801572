"""PRM HTTP service and client: round trip, auth, malformed and oversized requests, retries."""
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from prpo_openrlhf.prm import PRMClient, PRMClientError, PRMServer
from prpo_openrlhf.testing.net import free_port

from .reference import PROBLEMS, SEGMENTS

TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def server(hf_scorer):
    srv = PRMServer(hf_scorer, port=0, token=TOKEN, max_request_bytes=4096).start()
    yield srv
    srv.shutdown()


def _post(server, body, token=TOKEN, path="/score"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.url + path, data=data, headers=headers, timeout=30)


def test_round_trip_equals_the_scorer(server, hf_scorer):
    client = PRMClient(server.url, token=TOKEN, retries=0)
    assert server.host == "127.0.0.1"
    assert client.health() == {"status": "ok"}
    scores, stats = client.score_with_stats(PROBLEMS, SEGMENTS)
    assert scores == hf_scorer.score(PROBLEMS, SEGMENTS)  # JSON floats round-trip exactly
    assert stats.segments == 10 and stats.filled_segments == 0
    # A batch of one is padded differently from the batch of two, so compare it with the
    # scorer's own batch of one: the float sums differ in the last bits between the two.
    single = client.score_async(PROBLEMS[:1], SEGMENTS[:1]).result(timeout=60)[0]
    assert single == hf_scorer.score(PROBLEMS[:1], SEGMENTS[:1])
    info = client.info()
    assert info["model"] == hf_scorer.model_name_or_path and info["counts"]["served"] >= 2
    client.close()


def test_several_trainings_share_one_service(server, hf_scorer):
    batches = [(PROBLEMS[i:], SEGMENTS[i:]) for i in range(3)]
    results = [None] * 3

    def train(k):
        results[k] = PRMClient(server.url, token=TOKEN).score(*batches[k])

    threads = [threading.Thread(target=train, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for (p, s), got in zip(batches, results):
        assert got == hf_scorer.score(p, s)


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_wrong_token_is_401(server, token):
    resp = _post(server, {"problems": ["q"], "segments": [["a"]]}, token=token)
    assert resp.status_code == 401 and "bearer token" in resp.json()["error"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(server.url + "/info", timeout=30).status_code == 401
    with pytest.raises(PRMClientError) as err:
        PRMClient(server.url, token=token or "", retries=0).score(["q"], [["a"]])
    assert err.value.status == 401


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    ([1, 2], "must be a JSON object"),
    ({"problems": ["a"]}, "must be a JSON object"),
    ({"problems": ["a"], "segments": [["x"], ["y"]]}, "1 problems but 2 segment lists"),
    ({"problems": [3], "segments": [["x"]]}, r"problems[0] is int"),
    ({"problems": ["a"], "segments": ["x"]}, r"segments[0] is str"),
])
def test_malformed_requests_get_json_400(server, body, message):
    resp = _post(server, body)
    assert resp.status_code == 400
    assert message in resp.json()["error"]


def test_oversized_unknown_and_wrong_method(server):
    big = {"problems": ["x" * 5000], "segments": [["a"]]}
    resp = _post(server, big)
    assert resp.status_code == 413 and "exceeds the limit of 4096 bytes" in resp.json()["error"]
    with pytest.raises(PRMClientError, match="413"):
        PRMClient(server.url, token=TOKEN, retries=3, backoff_s=0.01).score(*big.values())
    assert requests.get(server.url + "/nope", timeout=30).status_code == 404
    assert requests.get(server.url + "/score", timeout=30).status_code == 405
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.putrequest("POST", "/score")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()  # no Content-Length
    resp = conn.getresponse()
    assert resp.status == 411 and "Content-Length" in json.loads(resp.read())["error"]
    conn.close()


def test_client_gives_up_on_an_unreachable_service_after_its_retries():
    port = free_port()
    client = PRMClient(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01,
                       connect_timeout_s=1)
    with pytest.raises(PRMClientError, match="failed after 3 attempts") as err:
        client.health()
    assert err.value.status is None


def test_client_retries_503_then_succeeds():
    """A peer that is busy twice (a restarting service) and then answers."""
    calls = []

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self):
            calls.append(self.path)
            status, body = (503, b'{"error": "busy"}') if len(calls) <= 2 else \
                (200, b'{"status": "ok"}')
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with _peer(Busy) as url:
        client = PRMClient(url, retries=3, backoff_s=0.01)
        assert client.health() == {"status": "ok"} and len(calls) == 3


@contextlib.contextmanager
def _peer(handler):
    """A plain HTTP server on 127.0.0.1 answering with ``handler``; yields its URL."""
    peer = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{peer.server_address[1]}"
    finally:
        peer.shutdown()
        peer.server_close()


def test_cli_serves_with_a_token_from_the_environment(tiny_prm_path, hf_scorer):
    env = dict(os.environ, PRPO_PRM_TOKEN=TOKEN)
    exe = os.path.join(os.path.dirname(sys.executable), "prpo-serve-prm")
    proc = subprocess.Popen([exe, "--model", tiny_prm_path, "--port", "0", "--dtype", "fp32",
                             "--device", "cpu", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving" in line, line
        url = line.rsplit(" on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert PRMClient(url, token=TOKEN).score(PROBLEMS, SEGMENTS) == \
            hf_scorer.score(PROBLEMS, SEGMENTS)
        assert requests.post(url + "/score", json={}, timeout=30).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


STATS = {"responses": 1, "segments": 2}


@pytest.mark.parametrize("body, message", [
    ('{"scores": [[0.5, NaN]], "stats": STATS}', "segment 1: score nan is not a finite number in [0, 1]"),
    ('{"scores": [[Infinity, 0.5]], "stats": STATS}', "segment 0: score inf"),
    ('{"scores": [[-5.0, 0.5]], "stats": STATS}', "score -5.0"),
    ('{"scores": [[0.5, 7.0]], "stats": STATS}', "score 7.0"),
    ('{"scores": [["0.5", 0.5]], "stats": STATS}', "score '0.5'"),
    ('{"scores": [[true, 0.5]], "stats": STATS}', "score True"),
    ('{"scores": [[0.5]], "stats": STATS}', "response 0: [0.5] is not 2 scores"),
    ('{"stats": STATS}', "no 'scores' list"),
    ('{"scores": [[0.5, 0.5]]}', "'stats' are missing or malformed"),
    ('{"scores": [[0.5, 0.5]], "stats": [1, 2]}', "'stats' are missing or malformed"),
    ('<html>oops</html>', "not JSON"),
])
def test_client_refuses_garbage_scores_with_a_named_error(body, message):
    """Before: NaN, inf, out-of-range numbers and strings reached the trainer as scores; a reply
    without scores raised KeyError, a non-JSON one JSONDecodeError."""
    payload = body.replace("STATS", json.dumps(STATS)).encode()

    class Garbage(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    with _peer(Garbage) as url, pytest.raises(PRMClientError) as err:
        PRMClient(url, retries=0).score(["q"], [["a", "b"]])
    assert message in str(err.value)


def test_client_passes_valid_scores_as_floats():
    from prpo_openrlhf.prm.client import checked_reply

    scores, stats = checked_reply({"scores": [[0, 1, 0.25]], "stats": STATS}, [["a", "b", "c"]], "test")
    assert scores == [[0.0, 1.0, 0.25]] and all(type(v) is float for v in scores[0]) and stats.segments == 2


def test_stats_fields_a_newer_service_adds_are_left_out_with_a_warning(caplog):
    """Before: PRMStats(**stats) raised TypeError on a field it did not know, so a service one
    version ahead of the trainer failed every call although its scores were fine."""
    from prpo_openrlhf.prm.client import checked_reply

    with caplog.at_level("WARNING", logger="prpo_openrlhf.prm.scorer"):
        for _ in range(2):
            scores, stats = checked_reply({"scores": [[0.5, 1.0]], "stats": {**STATS, "queue_s": 0.3}},
                                          [["a", "b"]], "test")
    assert scores == [[0.5, 1.0]] and stats.responses == 1 and stats.segments == 2
    warnings = [r.getMessage() for r in caplog.records if "queue_s" in r.getMessage()]
    assert len(warnings) == 1 and "does not know: queue_s" in warnings[0]  # once, not per call
