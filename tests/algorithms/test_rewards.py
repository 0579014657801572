"""Answer extraction, math-verify equivalences, the killable grader pool, outcome rewards."""
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from prpo_openrlhf.algorithms import rewards
from prpo_openrlhf.algorithms._answer import last_boxed
from prpo_openrlhf.algorithms._screen import hostile_reason
from prpo_openrlhf.algorithms.rewards import (
    GradeResults,
    grade_batch,
    length_penalty,
    outcome_rewards,
    verify_answer,
)

BUDGET = 1.0  # seconds per answer in the adversarial tests
DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module", autouse=True)
def pool():
    rewards.start_pool(2)  # workers warm up while the first tests run
    yield
    rewards.close()


def grade(responses, references, **kw):
    return grade_batch(responses, references, num_workers=2, **kw)


def test_last_boxed():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"  # escaped braces are not groups
    assert last_boxed("\\boxed {x^{2}}") == "x^{2}"
    assert last_boxed("\\boxed{3} and a truncated \\boxed{\\frac{1}{2") is None  # the last one counts
    assert last_boxed("\\boxed 5") is None
    assert last_boxed("") is None and last_boxed(None) is None


EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),  # fraction vs decimal
    ("\\dfrac{14}{3}", "\\frac{14}{3}"),
    ("30^\\circ", "30"),  # degrees
    ("(-\\infty, 2]", "(-\\infty,2]"),  # interval
    ("\\{1,2\\}", "\\{2,1\\}"),  # set
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),  # tuple
    ("\\text{(C)}", "C"),  # \text{}
    ("3+4i", "4i+3"),  # complex number
    ("1,000", "1000"),  # thousands separator
    ("10{,}000", "10000"),
]
DIFFERENT = [
    ("\\frac{1}{2}", "0.51"),
    ("(-\\infty, 2]", "(-\\infty, 2)"),
    ("(1,2)", "(2,1)"),
    ("3+4i", "3-4i"),
    ("1,000", "1"),
]


@pytest.mark.parametrize("reference,answer", EQUIVALENT + DIFFERENT)
def test_verify_answer_in_process(reference, answer):
    want = (reference, answer) in EQUIVALENT
    assert verify_answer(f"So the answer is $\\boxed{{{answer}}}$.", reference) is want


def test_verify_answer_soft_deadline_on_the_main_thread():
    t0 = time.monotonic()
    assert verify_answer("\\boxed{9^{9^{9^{9^{9}}}}}", "7", timeout_s=0.5) is False
    assert time.monotonic() - t0 < 2.0


def test_grade_batch_matches_in_process_verdicts():
    pairs = EQUIVALENT + DIFFERENT
    responses = [f"Thus \\boxed{{{a}}}" for _, a in pairs] + ["no box here", "\\boxed{7}"]
    references = [r for r, _ in pairs] + ["7", "7"]
    got = grade(responses, references, timeout_s=10.0)
    assert isinstance(got, list) and isinstance(got, GradeResults)
    assert got == [True] * len(EQUIVALENT) + [False] * len(DIFFERENT) + [False, True]
    assert got.no_boxed == 1 and got.timeouts == 0 and got.crashed == 0


def test_adversarial_answers_get_a_verdict_within_budget():
    tower = "\\boxed{9^{9^{9^{9^{9}}}}}"  # SymPy spends minutes on this
    responses = ["", "\\boxed{\\frac{1}{2", "x" * 100_000 + "\\boxed{7}", "\\boxed{" + "1" * 100_000 + "}",
                 tower, "\\boxed{(10^{10})!}", "{" * 5000, "\\boxed{" + "{" * 3000 + "7" + "}" * 3000 + "}"]
    t0 = time.monotonic()
    got = grade(responses, ["7"] * len(responses), timeout_s=BUDGET, screen=False)
    assert got == [False, False, True, False, False, False, False, False]
    assert got.timeouts >= 2 and got.screened == 0  # the tower and the factorial at least
    assert got.max_latency_s <= BUDGET + 1.0
    assert time.monotonic() - t0 < 4 * (BUDGET + 1.0)


def test_the_screen_settles_hostile_answers_without_a_worker():
    hostile = ["9^{9^{9^{9^{9}}}}", "(10^{10})!", "10^{10^{9}}", "\\binom{10^{9}}{10^{7}}", "2^{1000000}",
               "1" * 100_000, "{" * 3000 + "7" + "}" * 3000]
    responses = [f"so \\boxed{{{a}}}" for a in hostile] + ["\\boxed{10^{10^{9}}}", "\\boxed{2^{10}}"]
    references = ["7"] * len(hostile) + ["10^{10^9}", "1024"]
    t0 = time.monotonic()
    got = grade(responses, references, timeout_s=BUDGET)
    # Screened: string equality only (the tower equals its reference up to braces: not equal);
    # 2^{10} is harmless and goes to math-verify.
    assert got == [False] * len(hostile) + [False, True]
    assert got.screened == len(hostile) + 1 and got.timeouts == 0
    assert time.monotonic() - t0 < BUDGET
    same = grade(["\\boxed{9^{9^{9}}}"], ["9^{9^{ 9}}"], timeout_s=BUDGET)
    assert same == [True] and same.screened == 1


@pytest.mark.parametrize("name", ["math500", "aime24", "aime25", "amc23"])
def test_the_screen_passes_every_benchmark_answer(name):
    rows = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    assert rows and [r["answer"] for r in rows if hostile_reason(str(r["answer"]))] == []


def test_hostile_reason_names_the_shape():
    assert [hostile_reason(a) for a in ("x^{y^{2}}", "\\binom{6}{2}", "10!", "2^{100}", "e^{2x}")] == [None] * 5
    assert [hostile_reason(a) for a in ("9^{9^{9}}", "100000!", "\\binom{10^{9}}{2}", "x" * 2000)] == [
        "power", "factorial", "binomial", "long"]


def test_parent_kills_a_worker_that_overruns():
    # Without the workers' own SIGALRM stop, only the parent's kill ends the tower.
    got = grade(["\\boxed{9^{9^{9^{9^{9}}}}}", "\\boxed{2}"], ["7", "2"], timeout_s=BUDGET, soft_timeouts=False,
                screen=False)
    assert got == [False, True]
    assert got.killed == 1 and got.timeouts == 1
    assert got.max_latency_s <= BUDGET + 1.0
    assert grade(["\\boxed{\\frac{3}{4}}"], ["0.75"], timeout_s=10.0) == [True]  # the pool recovered


def test_a_dead_worker_is_replaced_and_its_answer_counted():
    def kill_busy_worker():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            busy = [w for w in list(rewards._POOL._workers) if w.job is not None]
            if busy:
                os.kill(busy[0].proc.pid, 9)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_busy_worker)
    killer.start()
    got = grade(["\\boxed{9^{9^{9^{9^{9}}}}}"], ["7"], timeout_s=20.0, soft_timeouts=False, screen=False)
    killer.join()
    assert got == [False] and got.crashed == 1
    assert grade(["\\boxed{5}"], ["5"], timeout_s=10.0) == [True]


def test_grade_batch_from_a_worker_thread():
    out = []
    t = threading.Thread(target=lambda: out.append(grade(["\\boxed{0.5}", "\\boxed{9^{9^{9^{9}}}}"],
                                                         ["\\frac12", "3"], timeout_s=BUDGET)))
    t.start()
    t.join(timeout=30)
    assert out and out[0] == [True, False]


def test_bad_calls_are_named():
    with pytest.raises(ValueError, match="2 responses but 1 references"):
        grade(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="timeout_s"):
        grade(["a"], ["a"], timeout_s=0)
    assert grade([], []) == []


def test_length_penalty():
    # L/1024 only above 1024 tokens; threshold and scale are options.
    got = length_penalty([10, 1024, 1025, 2048])
    torch.testing.assert_close(got, torch.tensor([0.0, 0.0, 1025 / 1024, 2.0]))
    torch.testing.assert_close(length_penalty([100, 300], threshold=200, scale=100.0), torch.tensor([0.0, 3.0]))


def test_outcome_rewards():
    responses = ["\\boxed{4}", "\\boxed{5}", "\\boxed{4}", "no answer"]
    R, grades = outcome_rewards(responses, ["4"] * 4, [100, 100, 2048, 1500], timeout_s=10.0, num_workers=2)
    # +1 / -1, minus L/1024 for L > 1024
    torch.testing.assert_close(R, torch.tensor([1.0, -1.0, 1.0 - 2.0, -1.0 - 1500 / 1024]))
    assert grades == [True, False, True, False] and grades.no_boxed == 1
