"""Answer extraction, math-verify equivalences, the killable grader pool, outcome rewards."""
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from prpo_openrlhf.algorithms import rewards
from prpo_openrlhf.algorithms._answer import CONTEXT_CHARS, answer_context, final_answer, last_boxed, reference_text
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


def test_final_answer_joins_the_boxes_math_verify_joins():
    def boxes(text):
        final = final_answer(text)
        return None if final is None else final.boxes

    assert boxes("so $\\boxed{1}$ and $\\boxed{-2}$.") == ("1", "-2")  # "and" within 70 characters
    assert boxes("\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}") == ("(2, 2)", "(6, 2)")
    assert boxes("\\boxed{1},\\boxed{2},\\boxed{3}") == ("1", "2", "3")
    assert boxes("\\boxed{1}\\boxed{2}") == ("1", "2")  # under 10 characters apart: no separator needed
    assert boxes("\\boxed{1} no no no no no \\boxed{2}") == ("2",)  # 10+ apart without a separator
    assert boxes("try \\boxed{5}." + " Checking again." * 10 + " So \\boxed{7}.") == ("7",)  # far apart
    assert boxes("\\boxed{7} or, again, \\boxed{7}") == ("7",)  # a repeat is one answer
    assert boxes("\\boxed{ 3 } then \\boxed 5") == ("3",)  # a brace-less \\boxed is skipped
    assert boxes("\\boxed{3} and a truncated \\boxed{\\frac{1}{2") is None  # the last one counts
    assert boxes("\\boxed{\\boxed{5}}") == ("5",)
    final = final_answer("x = \\boxed{1}, \\boxed{2}!")
    assert "x = \\boxed{1}, \\boxed{2}!"[final.start:final.end] == "\\boxed{1}, \\boxed{2}" and final.joined == "1,2"


def test_answer_context_keeps_the_lines_around_the_final_answer():
    reasoning = "".join(f"step {i}: $x_{i} = {i}$\n" for i in range(200))
    text = reasoning + "\\[\n\\boxed{7}\n\\]\n" + "Done.\n" * 300
    context = answer_context(text, final_answer(text))
    assert "\\[\n\\boxed{7}\n\\]" in context and len(context) <= 2 * CONTEXT_CHARS + len("\\boxed{7}")
    assert context.startswith("step ") and context.endswith("Done.")  # cut at line breaks
    assert answer_context("a \\boxed {5} b", final_answer("a \\boxed {5} b")) == "a \\boxed{5} b"


def test_reference_text():
    assert reference_text(" \\frac{1}{2} ") == "\\boxed{\\frac{1}{2}}"
    assert reference_text("\\$18.90") == "\\boxed{\\$18.90}"  # an escaped dollar is no delimiter
    assert reference_text("$(2, 2), (6, 2)$") == "$(2, 2), (6, 2)$"  # math-verify reads delimited text
    assert reference_text("\\boxed{1} and \\boxed{2}") == "\\boxed{1} and \\boxed{2}"


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


# (reference, response, verdict): the response's final answer, as math-verify extracts it.
FINAL_ANSWERS = [
    ("1, -2", "the roots are $\\boxed{1}$ and $\\boxed{-2}$.", True),  # issue #16
    ("(2, 2), (6, 2)", "$$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$$", True),
    ("\\{1, 2, 3\\}", "\\boxed{1} and \\boxed{2} and \\boxed{3}", True),
    ("1, -2", "the roots are $\\boxed{1}$ and $\\boxed{3}$.", False),
    ("7", "first \\boxed{5}." + " Wait, that is wrong." * 5 + " So \\boxed{7}.", True),  # only the last group
    ("5", "first \\boxed{5}." + " Wait, that is wrong." * 5 + " So \\boxed{7}.", False),
    ("10455", "so $\\boxed{255}$ more. The final answer is $10,455$. I hope it is correct.", True),
    ("7", "\\boxed{7} is wrong; the answer is 8", True),  # never a bare number from the text
    ("8", "\\boxed{7} is wrong; the answer is 8", False),
]


@pytest.mark.parametrize("reference,response,want", FINAL_ANSWERS)
def test_verify_answer_reads_the_final_answer(reference, response, want):
    assert verify_answer(response, reference) is want


def test_grade_batch_matches_in_process_verdicts():
    pairs = EQUIVALENT + DIFFERENT
    responses = [f"Thus \\boxed{{{a}}}" for _, a in pairs] + ["no box here", "\\boxed{7}"]
    references = [r for r, _ in pairs] + ["7", "7"]
    responses += [response for _, response, _ in FINAL_ANSWERS]
    references += [reference for reference, _, _ in FINAL_ANSWERS]
    got = grade(responses, references, timeout_s=10.0)
    assert isinstance(got, list) and isinstance(got, GradeResults)
    assert got == ([True] * len(EQUIVALENT) + [False] * len(DIFFERENT) + [False, True]
                   + [want for _, _, want in FINAL_ANSWERS])
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


def test_the_screen_reads_every_box_of_the_final_answer():
    # A hostile box joined to the last one is screened; one far before it is not read at all.
    far = "\\boxed{9^{9^{9^{9}}}}" + " Let me check." * 10 + " So \\boxed{7}."
    got = grade(["\\boxed{9^{9^{9^{9}}}} and \\boxed{7}", far, "\\boxed{1}" * 20_000, "\\boxed{2},\\boxed{1}"],
                ["7", "7", "1", "2,1"], timeout_s=BUDGET)
    # 20,000 boxes: a span over 1000 characters, screened; as math-verify does, repeats of one
    # box are one answer, "1", equal to the reference.
    assert got == [False, True, True, True]
    assert got.screened == 2 and got.timeouts == 0


def test_pathological_text_around_the_answer_is_cut():
    # math-verify's regexes are quadratic in unclosed "\\[" (about 19 s for these 40,000
    # characters whole); only CONTEXT_CHARS on each side of the final answer reach them.
    t0 = time.monotonic()
    got = grade(["\\[" * 20_000 + "\\boxed{7}" + "\\(" * 20_000], ["7"], timeout_s=BUDGET, screen=False)
    assert got == [True] and got.timeouts == 0
    assert time.monotonic() - t0 < BUDGET


def _benchmark_rows(name):
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def _boxed_back(answer):
    return f"Let us work it out step by step.\n\nThe answer is $\\boxed{{{answer}}}$."


@pytest.mark.parametrize("name", ["math500", "aime24", "aime25", "amc23"])
def test_the_screen_passes_every_benchmark_answer(name):
    rows = _benchmark_rows(name)
    assert rows and [r["answer"] for r in rows if hostile_reason(str(r["answer"]))] == []
    finals = [(text, final_answer(text)) for text in (_boxed_back(r["answer"]) for r in rows)]
    assert [text for text, f in finals if hostile_reason(text[f.start:f.end])] == []


def test_every_benchmark_answer_grades_correct_against_itself():
    # The 600 answers of MATH500, AIME24/25 and AMC23, each boxed back into a response.
    rows = [r for name in ("math500", "aime24", "aime25", "amc23") for r in _benchmark_rows(name)]
    references = [str(r["answer"]) for r in rows]
    got = grade([_boxed_back(a) for a in references], references, timeout_s=10.0)
    assert len(got) == 600 and [a for a, ok in zip(references, got) if not ok] == []


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


def test_grade_batch_never_matches_an_unusable_reference():
    refs = [float("nan"), None, "", "\u200b", float("inf"), True, "2"]
    responses = ["\\boxed{nan}", "\\boxed{None}", "\\boxed{}", "\\boxed{}", "\\boxed{\\infty}",
                 "\\boxed{True}", "\\boxed{2}"]
    assert list(rewards.grade_batch(responses, refs, timeout_s=10.0)) == [False] * 6 + [True]
