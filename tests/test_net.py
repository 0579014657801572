"""The helpers tests and benchmarks use to start local servers (prpo_openrlhf/testing/net.py)."""
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prpo_openrlhf.testing.net import free_port, wait_healthy


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_returns_once_the_server_answers(sleeper):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_healthy(f"http://127.0.0.1:{server.server_address[1]}", sleeper, 10, "test server")
    finally:
        server.shutdown()


def test_a_server_that_exits_is_named_with_its_code():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="dead server exited with code 3"):
        wait_healthy(f"http://127.0.0.1:{free_port()}", proc, 10, "dead server")


def test_a_server_that_never_answers_times_out(sleeper):
    with pytest.raises(RuntimeError, match="silent server did not answer .* within 2 s"):
        wait_healthy(f"http://127.0.0.1:{free_port()}", sleeper, 2, "silent server")
