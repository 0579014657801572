"""VLLMPoolingClient: the shared PRM on vLLM's own server.

Fast tests use a stand-in peer that speaks vLLM's /v1/models and /pooling protocol and answers
with the real tiny PRM's probabilities for exactly the ids it was sent: they check the client's
rendering and its reading of the reply. The slow test starts vLLM's server itself
(``python -m prpo_openrlhf.prm.vllm_serve``) on 127.0.0.1.
"""
import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from prpo_openrlhf.prm import PRMClientError, PRMScorer, PRMServer, VLLMPoolingClient, connect
from prpo_openrlhf.testing.net import free_port, wait_healthy

from .reference import PROBLEMS, SEGMENTS
from .test_http import _peer


def _vllm_peer(scorer, served_len, sent, mangle=None):
    """Handler of a stand-in vLLM server: the PRM's probabilities for the posted ids."""

    class Peer(BaseHTTPRequestHandler):
        def _answer(self, payload):
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._answer({"object": "list", "data": [{"id": scorer.model_name_or_path,
                                                      "max_model_len": served_len}]})

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            sent.append(request)
            probs = scorer.backend.positive_probs(request["input"])
            data = [{"index": i, "object": "pooling", "data": [[1 - p, p] for p in row.tolist()]}
                    for i, row in enumerate(probs)]
            self._answer(mangle(data) if mangle else {"data": data})

        def log_message(self, *args):
            pass

    return Peer


def test_the_client_renders_inputs_as_prmscorer_and_gets_its_scores(hf_scorer):
    sent = []
    with _peer(_vllm_peer(hf_scorer, 2048, sent)) as url:
        client = connect(url)
        assert isinstance(client, VLLMPoolingClient) and client.model == hf_scorer.model_name_or_path
        scores, stats = client.score_with_stats(PROBLEMS, SEGMENTS)
    (request,) = sent
    assert request["task"] == "token_classify" and request["model"] == hf_scorer.model_name_or_path
    assert request["input"] == [hf_scorer.inputs.encode(p, s).ids for p, s in zip(PROBLEMS, SEGMENTS)]
    ref, ref_stats = hf_scorer.score_with_stats(PROBLEMS, SEGMENTS)
    for got, want in zip(scores, ref):
        assert got == pytest.approx(want, abs=1e-6)
    assert (stats.responses, stats.segments, stats.tokens) == (ref_stats.responses, ref_stats.segments,
                                                              ref_stats.tokens)


def test_over_long_inputs_are_cut_and_filled_like_prmscorer(short_prm_path):
    """A PRM with a 256-token limit: the same cut, the same fill, the same counts."""
    scorer = PRMScorer(short_prm_path, "hf", dtype="fp32", device="cpu", overlong_fill=0.5)
    problems = ["q " * 20, "short"]
    segments = [[f"step {i} " * 12 for i in range(6)], ["a", "b"]]
    sent = []
    with _peer(_vllm_peer(scorer, 256, sent)) as url:
        scores, stats = VLLMPoolingClient(url, overlong_fill=0.5).score_with_stats(problems, segments)
    ref, ref_stats = scorer.score_with_stats(problems, segments)
    assert ref_stats.filled_segments > 0 and stats.filled_segments == ref_stats.filled_segments
    assert stats.truncated_indices == ref_stats.truncated_indices == [0]
    for got, want in zip(scores, ref):
        assert got == pytest.approx(want, abs=1e-6)
    assert all(len(ids) <= 256 for ids in sent[0]["input"])


@pytest.mark.parametrize("mangle, message", [
    (lambda d: {"data": d[:-1]}, "expected 'data' with 4 items"),
    (lambda d: {"data": [{**x, "data": x["data"][:1]} for x in d]}, "is not 2 per-tag probability pairs"),
    (lambda d: {"data": [{**x, "data": [[0.5, float("nan")]] * len(x["data"])} for x in d]},
     "is not two probabilities in [0, 1]"),
    (lambda d: {"data": [{**x, "data": [[0.5, 1.5]] * len(x["data"])} for x in d]}, "is not two probabilities"),
    (lambda d: {"error": "boom"}, "expected 'data'"),
])
def test_a_wrong_pooling_reply_is_a_named_error(hf_scorer, mangle, message):
    with _peer(_vllm_peer(hf_scorer, 2048, [], mangle)) as url, pytest.raises(PRMClientError) as err:
        VLLMPoolingClient(url).score(PROBLEMS, SEGMENTS)
    assert message in str(err.value)


def test_connect_finds_prpo_serve_prm_by_its_404(hf_scorer):
    server = PRMServer(hf_scorer, port=0).start()
    try:
        client = connect(server.url)
        assert type(client).__name__ == "PRMClient"
        assert client.score(PROBLEMS, SEGMENTS) == hf_scorer.score(PROBLEMS, SEGMENTS)
    finally:
        server.shutdown()
    with pytest.raises(ValueError, match="unknown PRM service API"):
        connect(server.url, "grpc")


def test_the_server_command_line(tiny_prm_path, hf_scorer):
    from prpo_openrlhf.prm.vllm_serve import server_argv

    argv = server_argv(tiny_prm_path, host="127.0.0.1", port=9, cpu=True)
    assert argv[argv.index("--runner") + 1] == "pooling"
    assert json.loads(argv[argv.index("--pooler-config") + 1]) == {"step_tag_id": hf_scorer.tag_id}
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(256 << 20)
    assert argv[argv.index("--middleware") + 1] == "prpo_openrlhf.prm.vllm_serve.RequireBearerToken"
    sized = server_argv(tiny_prm_path, host="h", port=9, cpu=True, extra=["--kv-cache-memory-bytes=1"])
    assert sized.count("--kv-cache-memory-bytes=1") == 1 and "--kv-cache-memory-bytes" not in sized
    assert "--kv-cache-memory-bytes" not in server_argv(tiny_prm_path, host="h", port=9, cpu=False)


def test_every_prm_engine_on_cpu_gets_a_small_kv_cache_unless_sized():
    """Before: PRMScorer(path, backend="vllm") on CPU asked vLLM for 92 % of RAM."""
    from prpo_openrlhf.vllm_cpu import sized_for_cpu

    assert sized_for_cpu({"max_model_len": 64}, cpu=True) == {
        "max_model_len": 64, "kv_cache_memory_bytes": 256 << 20, "enforce_eager": True}
    assert sized_for_cpu({"gpu_memory_utilization": 0.3}, cpu=True) == {"gpu_memory_utilization": 0.3}
    assert sized_for_cpu({"kv_cache_memory_bytes": 1}, cpu=True) == {"kv_cache_memory_bytes": 1}
    assert sized_for_cpu({}, cpu=False) == {}


def test_a_blank_token_stops_the_vllm_server_start_up(tiny_prm_path):
    proc = subprocess.run([sys.executable, "-m", "prpo_openrlhf.prm.vllm_serve", "--model", tiny_prm_path],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PRPO_PRM_TOKEN": " "})
    assert proc.returncode != 0 and "is set but empty" in proc.stderr


@pytest.mark.slow
def test_vllm_server_scores_equal_prmscorer_and_need_the_token(tiny_prm_path, hf_scorer):
    port = free_port()
    url, token = f"http://127.0.0.1:{port}", "pool-secret"
    proc = subprocess.Popen([sys.executable, "-m", "prpo_openrlhf.prm.vllm_serve", "--model", tiny_prm_path,
                             "--port", str(port), "--", "--dtype", "float32"],
                            env={**os.environ, "PRPO_PRM_TOKEN": token},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, proc, 300, "vLLM's server")
        client = connect(url, token=token)
        assert isinstance(client, VLLMPoolingClient)
        scores, stats = client.score_with_stats(PROBLEMS, SEGMENTS)
        for got, want in zip(scores, hf_scorer.score(PROBLEMS, SEGMENTS)):
            assert got == pytest.approx(want, abs=1e-5)
        body = {"input": [[1, 2, 3]], "task": "token_classify"}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            for method, path in (("POST", "/pooling"), ("GET", "/v1/models"), ("GET", "/metrics")):
                resp = requests.request(method, url + path, json=body, headers=headers, timeout=30)
                assert resp.status_code == 401, (path, headers, resp.status_code)
        assert requests.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"},
                            timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=60)
