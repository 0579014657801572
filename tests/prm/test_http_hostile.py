"""The PRM service and client under hostile or unlucky conditions (issue #14, items 3 and 4).

Each test names what happened before its fix. The service runs the real tiny PRM in process;
stand-in peers are used only where the test needs a server that misbehaves on purpose.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from prpo_openrlhf.prm import PRMClient, PRMClientError, PRMServer
from prpo_openrlhf.prm import client as client_module

from .reference import PROBLEMS, SEGMENTS
from .test_http import _peer

TOKEN = "hostile-token"


@pytest.fixture
def server(hf_scorer):
    srv = PRMServer(hf_scorer, port=0, token=TOKEN, max_request_chars=2000, max_segments=8,
                    max_connections=3, idle_timeout_s=1.0).start()
    yield srv
    srv.shutdown()


def _post(server, body, token=TOKEN, **headers):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.url + "/score", data=data, timeout=30,
                         headers={"Authorization": f"Bearer {token}", **headers})


def _counts(server):
    return server.info_payload()["counts"]


# --- item 3: one deadline per call, no re-sent POSTs ---------------------------------------

def test_a_call_queued_behind_a_stuck_forward_ends_with_504_at_its_deadline(server, hf_scorer):
    """Before: the service waited on its scoring lock without limit and the client re-sent the
    POST after each 600 s read timeout (the same batch queued 4 times)."""
    server._score_lock.acquire()  # another request's forward that does not end
    try:
        start = time.monotonic()
        with pytest.raises(PRMClientError, match="deadline passed while it waited") as err:
            PRMClient(server.url, token=TOKEN, timeout_s=1.5, retries=3).score(PROBLEMS, SEGMENTS)
        waited = time.monotonic() - start
        # /info answers from counters while the model is busy.
        info = requests.get(server.url + "/info", headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=5).json()
    finally:
        server._score_lock.release()
    assert err.value.status == 504 and 1.4 < waited < 5
    assert info["counts"]["timed_out"] == 1 and info["counts"]["failed"] == 0
    assert info["counts"]["served"] == 0 and info["limits"]["max_segments"] == 8
    # The service is whole afterwards.
    assert PRMClient(server.url, token=TOKEN).score(PROBLEMS, SEGMENTS) == hf_scorer.score(PROBLEMS, SEGMENTS)


def test_a_post_without_an_answer_is_not_sent_again(monkeypatch):
    """Before: a read timeout re-sent the POST (retries + 1 times in all)."""
    monkeypatch.setattr(client_module, "GRACE_S", 0.2)
    posts, seen_deadlines = [], []

    class Silent(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(self.path)
            seen_deadlines.append(float(self.headers[client_module.DEADLINE_HEADER]))
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(3)  # never answers in time

        def log_message(self, *args):
            pass

    with _peer(Silent) as url:
        start = time.monotonic()
        with pytest.raises(PRMClientError, match="not sent again"):
            PRMClient(url, timeout_s=1.0, retries=3, backoff_s=0.01).score(["q"], [["a"]])
        assert time.monotonic() - start < 2.5
    assert len(posts) == 1 and 0.5 < seen_deadlines[0] <= 1.0


def test_retries_of_a_busy_service_stop_at_the_deadline():
    """503s are retried (nothing was taken), but never past the call's deadline."""
    calls = []

    class Busy(BaseHTTPRequestHandler):
        def do_POST(self):
            calls.append(time.monotonic())
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(503)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    with _peer(Busy) as url:
        start = time.monotonic()
        with pytest.raises(PRMClientError, match="deadline"):
            PRMClient(url, timeout_s=1.0, retries=100, backoff_s=0.2).score(["q"], [["a"]])
        assert time.monotonic() - start < 2.0 and 2 <= len(calls) < 10


def test_score_async_counts_the_deadline_from_submission(server):
    """With one request slot, a second call waits for the first; its wait counts."""
    client = PRMClient(server.url, token=TOKEN, timeout_s=1.0, max_in_flight=1)
    server._score_lock.acquire()
    try:
        first, second = (client.score_async(PROBLEMS, SEGMENTS) for _ in range(2))
        for future in (first, second):
            with pytest.raises(PRMClientError):
                future.result(timeout=10)
    finally:
        server._score_lock.release()
        client.close()


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "soon"])
def test_a_bad_deadline_header_is_400(server, value):
    resp = _post(server, {"problems": ["q"], "segments": [["a"]]}, **{client_module.DEADLINE_HEADER: value})
    assert resp.status_code == 400 and client_module.DEADLINE_HEADER in resp.json()["error"]


# --- item 4: the service's own robustness ----------------------------------------------------

@pytest.mark.parametrize("body, status, message", [
    (b"[" * 5000 + b"]" * 5000, 400, "RecursionError"),
    (b'{"problems": [' + b"9" * 5000 + b'], "segments": [["a"]]}', 400, "not valid JSON"),
    (b'{"problems": ["\\ud800"], "segments": [["a"]]}', 400, "problems[0] is not valid Unicode"),
    (b'{"problems": ["q"], "segments": [["a", "\\udfff b"]]}', 400, "segments[0][1] is not valid Unicode"),
    (b'\xff\xfe{"problems"', 400, "not valid JSON"),
    (json.dumps({"problems": ["q"], "segments": [["s"] * 9]}).encode(), 413, "9 segments; the limit is 8"),
    (json.dumps({"problems": ["q" * 1500], "segments": [["s" * 600]]}).encode(), 413,
     "2100 characters of text; the limit is 2000"),
])
def test_bad_client_input_is_a_client_error_not_a_prm_failure(server, body, status, message):
    """Before: deep nesting, huge integers and lone surrogates gave 500 and counted as PRM
    failures; there was no limit on characters or segments."""
    resp = _post(server, body)
    assert resp.status_code == status and message in resp.json()["error"], resp.text
    counts = _counts(server)
    assert counts["rejected"] == 1 and counts["failed"] == 0


def test_a_large_request_is_refused_while_another_is_being_scored(server):
    """The limit is checked before the scoring lock: a request over it does not queue."""
    server._score_lock.acquire()
    try:
        resp = _post(server, {"problems": ["q" * 3000], "segments": [["a"]]})
    finally:
        server._score_lock.release()
    assert resp.status_code == 413 and "--max-request-chars" in resp.json()["error"]


def test_a_client_that_hangs_up_is_not_a_prm_failure(server, caplog):
    """Before: each such client counted as a failure and logged a traceback."""
    body = json.dumps({"problems": PROBLEMS, "segments": SEGMENTS}).encode()
    server._score_lock.acquire()
    try:
        sock = socket.create_connection((server.host, server.port))
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                     b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.3)  # the request is read and waits for the model
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()      # a reset, as a killed client sends
    finally:
        server._score_lock.release()
    for _ in range(100):
        if _counts(server)["disconnected"]:
            break
        time.sleep(0.05)
    counts = _counts(server)
    assert counts["disconnected"] == 1 and counts["failed"] == 0 and counts["served"] == 1
    assert "Traceback" not in caplog.text


def test_connections_are_capped_and_idle_ones_closed(server):
    """Before: one thread per connection without a cap (300 idle connections held 300 threads
    for 120 s)."""
    idle = [socket.create_connection((server.host, server.port)) for _ in range(3)]
    time.sleep(0.2)
    refused = [requests.get(server.url + "/health", timeout=10) for _ in range(5)]
    assert [r.status_code for r in refused] == [503] * 5  # uvicorn's limit_concurrency
    # After the idle timeout (1 s) the service has closed the idle connections, though none of
    # them sent a request (uvicorn alone closes a connection only once it has been answered).
    time.sleep(1.5)
    for sock in idle:
        sock.settimeout(5)
        assert sock.recv(100) == b""
        sock.close()
    time.sleep(0.1)
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_a_503_for_too_many_connections_is_retried_by_the_client(server, hf_scorer, caplog):
    idle = [socket.create_connection((server.host, server.port)) for _ in range(3)]
    time.sleep(0.2)
    client = PRMClient(server.url, token=TOKEN, retries=5, backoff_s=0.5)
    try:
        # The idle connections time out after 1 s; the client's retries get through then.
        with caplog.at_level("WARNING", logger="uvicorn.error"):
            assert client.score(PROBLEMS, SEGMENTS) == hf_scorer.score(PROBLEMS, SEGMENTS)
    finally:
        for sock in idle:
            sock.close()
    assert "Exceeded concurrency limit" in caplog.text  # the first attempt was refused


def test_sigterm_while_a_request_is_served_stops_the_cli(tiny_prm_path):
    exe = os.path.join(os.path.dirname(sys.executable), "prpo-serve-prm")
    proc = subprocess.Popen([exe, "--model", tiny_prm_path, "--port", "0", "--dtype", "fp32",
                             "--device", "cpu", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().rsplit(" on ", 1)[1].strip()
        host, port = url[len("http://"):].split(":")
        # Connections open and arriving while the signal lands.
        idle = [socket.create_connection((host, int(port))) for _ in range(5)]
        stop = threading.Event()

        def knock():
            while not stop.is_set():
                try:
                    requests.get(url + "/health", timeout=2)
                except requests.RequestException:
                    pass

        knocker = threading.Thread(target=knock, daemon=True)
        knocker.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        stop.set()
        knocker.join(timeout=10)
        for sock in idle:
            sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("token", ["", "   \n"])
def test_an_empty_token_is_refused_at_start_up(hf_scorer, tmp_path, tiny_prm_path, token):
    """Before: an empty --token-file silently turned authentication off."""
    with pytest.raises(ValueError, match="empty or blank"):
        PRMServer(hf_scorer, port=0, token=token)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    exe = os.path.join(os.path.dirname(sys.executable), "prpo-serve-prm")
    for extra, env in ((["--token-file", str(token_file)], {}), ([], {"PRPO_PRM_TOKEN": token})):
        proc = subprocess.run([exe, "--model", tiny_prm_path, "--port", "0", *extra],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
        assert proc.returncode != 0 and "holds an empty token" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_the_cli_takes_the_limit_flags(tiny_prm_path):
    from prpo_openrlhf.cli.serve_prm import build_parser

    args = build_parser().parse_args(["--model", tiny_prm_path, "--max-request-chars", "10",
                                      "--max-segments", "2", "--call-timeout-s", "3",
                                      "--max-connections", "5", "--idle-timeout-s", "4"])
    assert (args.max_request_chars, args.max_segments, args.call_timeout_s,
            args.max_connections, args.idle_timeout_s) == (10, 2, 3.0, 5, 4.0)


def _kib(pid, field):
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


@pytest.mark.slow
def test_a_20_mb_request_is_refused_quickly_and_small_requests_go_on(tiny_prm_path, hf_scorer):
    """The memory probe: before, one 20 MB request took 6.6 GB of the service's memory and held
    every other client back for 53 s. Now it is refused (413) after parsing, outside the lock."""
    exe = os.path.join(os.path.dirname(sys.executable), "prpo-serve-prm")
    proc = subprocess.Popen([exe, "--model", tiny_prm_path, "--port", "0", "--dtype", "fp32",
                             "--device", "cpu", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PRPO_PRM_TOKEN": TOKEN})
    try:
        url = proc.stdout.readline().rsplit(" on ", 1)[1].strip()
        client = PRMClient(url, token=TOKEN)
        client.score(PROBLEMS, SEGMENTS)  # warm
        before = _kib(proc.pid, "VmRSS")
        body = json.dumps({"problems": ["p" * 100] * 2000, "segments": [["s" * 10_000]] * 2000})
        small = []

        def small_calls():
            for _ in range(5):
                t0 = time.monotonic()
                client.score(PROBLEMS, SEGMENTS)
                small.append(time.monotonic() - t0)

        thread = threading.Thread(target=small_calls)
        start = time.monotonic()
        thread.start()
        resp = requests.post(url + "/score", data=body, timeout=120,
                             headers={"Authorization": f"Bearer {TOKEN}"})
        big_s = time.monotonic() - start
        thread.join(timeout=120)
        grew_mib = (_kib(proc.pid, "VmHWM") - before) / 1024
        print(f"20 MB request: {resp.status_code} in {big_s:.2f} s; service peak grew {grew_mib:.0f} MiB; "
              f"small calls meanwhile: max {max(small):.2f} s")
        assert resp.status_code == 413 and "--max-request-chars" in resp.json()["error"]
        assert len(body) > 20e6 and grew_mib < 1024 and max(small) < 10
    finally:
        proc.terminate()
        proc.wait(timeout=60)
