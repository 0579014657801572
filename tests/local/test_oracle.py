"""The exact verifier as a PRM backend (``--prm.backend exact``, ``prpo-serve-prm --backend exact``)."""
import subprocess
import sys

import pytest
import requests

from prpo_openrlhf.local.oracle import ExactVerifierScorer
from prpo_openrlhf.prm import PRMClient, PRMClientError, PRMServer
from prpo_openrlhf.prm.factory import make_scorer
from prpo_openrlhf.prm.scorer import PRMScoreError

PROBLEM = "Compute (3+4)*2."
RIGHT = ["3+4=7\n", "7*2=14\n", "\\boxed{14}"]
SLIP = ["3+4=8\n", "8*2=16\n", "\\boxed{16}"]
HALF = ["3+4", "=7\n7*", "2=14\n\\boxed{14}"]  # cuts inside lines, as the entropy split makes them


def test_scores_are_the_verifiers_prefix_scores_with_stats():
    scorer = make_scorer(None, "exact")
    assert isinstance(scorer, ExactVerifierScorer)
    scores, stats = scorer.score_with_stats([PROBLEM] * 3, [RIGHT, SLIP, HALF])
    assert scores == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert (stats.responses, stats.segments, stats.scored_segments, stats.filled_segments) == (3, 9, 9, 0)
    assert scorer.info()["backend"] == "exact"


def test_a_problem_it_cannot_judge_is_an_error_not_a_score():
    with pytest.raises(PRMScoreError, match="response 1: the exact verifier cannot judge it"):
        make_scorer(None, "exact").score([PROBLEM, "Prove that sqrt(2) is irrational."], [RIGHT, ["It is."]])
    with pytest.raises(TypeError, match="unexpected options"):
        make_scorer(None, "exact", num_gpus=1)


def test_served_over_http_like_any_prm():
    server = PRMServer(make_scorer(None, "exact"), port=0).start()
    try:
        client = PRMClient(server.url, retries=0)
        assert client.score([PROBLEM, PROBLEM], [RIGHT, SLIP]) == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
        with pytest.raises(PRMClientError, match="cannot judge"):
            client.score(["Name a prime."], [["7"]])
        assert requests.get(server.url + "/info", timeout=10).json()["backend"] == "exact"
    finally:
        server.shutdown()


def test_cli_needs_a_model_exactly_when_the_backend_reads_one():
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "prpo_openrlhf.cli.serve_prm", *argv, "--port", "1"],
                              capture_output=True, text=True, timeout=120)

    assert "--backend exact reads no --model" in run("--backend", "exact", "--model", "x").stderr
    assert "--model is required" in run("--backend", "hf").stderr
