"""The synthetic task and its exact process verifier, on hand-worked problems and prefixes."""
import random

import pytest

from prpo_openrlhf.local.task import (ArithmeticTask, TaskConfig, noisy_solution, parse_expression,
                                      sample_problem)
from prpo_openrlhf.local.verifier import ExactProcessVerifier, judge_lines

P = "Compute ((7+5)*3)-4."


def test_parse_expression_values_and_shape():
    tree = parse_expression(P)
    assert tree.value == 32 and tree.op == "-"
    assert tree.left.op == "*" and tree.left.left.op == "+"
    assert parse_expression("9*(8-6)+1").value == 19  # precedence without full parentheses
    with pytest.raises(ValueError, match="no arithmetic expression"):
        parse_expression("Compute nothing.")


def test_sampled_problems_are_exact_and_in_range():
    rng, cfg = random.Random(0), TaskConfig()
    for _ in range(200):
        p = sample_problem(rng, cfg)
        assert parse_expression(p.text).value == p.answer
        assert len(p.steps) in cfg.n_ops
        assert all(0 <= s.result <= cfg.value_max for s in p.steps)
        assert p.solution().endswith(f"\\boxed{{{p.answer}}}")
        assert ExactProcessVerifier().score([p.text], [[p.solution()]]) == [[1.0]]


def test_splits_are_seeded_and_disjoint():
    a, b = ArithmeticTask(seed=3, n_heldout=50), ArithmeticTask(seed=3, n_heldout=50)
    assert [p.expression for p in a.heldout] == [p.expression for p in b.heldout]
    batch = a.train_batch(500, stream=7)
    assert [p.expression for p in batch] == [p.expression for p in b.train_batch(500, stream=7)]
    held = {p.expression for p in a.heldout}
    assert not held & {p.expression for p in batch}


def test_noisy_solutions_slip_and_carry_on():
    p = ArithmeticTask(seed=0).train_batch(1, 0)[0]
    assert noisy_solution(p, random.Random(0), 0.0) == p.solution()
    rng = random.Random(1)
    noisy = [noisy_solution(p, rng, 1.0) for _ in range(20)]
    assert all(n != p.solution() for n in noisy)
    # Every step of a fully noisy solution is wrong; each line still parses as a step.
    assert all(not any(judge_lines(p.text, n.split("\n")[:-1])) for n in noisy)


# Hand-worked prefixes of ((7+5)*3)-4 = 32: segments split mid-line on purpose.
STRICT_CASES = [
    (["7+5=12\n12*", "3=36\n", "36-4=32\n\\boxed{32}"], [1.0, 1.0, 1.0]),
    (["7+5=13\n", "13*3=39\n", "39-4=35\n\\boxed{35}"], [0.0, 0.0, 0.0]),
    (["7+5=12\n12*3=3", "5\n36-4=32\n", "\\boxed{32}"], [1.0, 0.0, 0.0]),     # 12*3=35
    (["7+5=", "12\n", "\\boxed{31}"], [1.0, 1.0, 0.0]),                       # wrong answer box
    (["5+7=12\n3*12=36\n", "36-4=32"], [1.0, 1.0]),                          # commuted + and *
    (["7+5=12\n", "4-36=32\n"], [1.0, 0.0]),                                 # - is not commutative
    (["7+5=12\n", "12-4=8\n"], [1.0, 0.0]),                                  # op not ready yet
    (["7+5=12\nso then\n", "12*3=36"], [0.0, 0.0]),                          # prose line
    (["7+5=12\n12*3"], [0.0]),                                               # truncated last line
    (["\n\n7+5=12\n\n"], [1.0]),                                             # blank lines ignored
]


@pytest.mark.parametrize("segments,expected", STRICT_CASES)
def test_strict_prefix_scores(segments, expected):
    assert ExactProcessVerifier().score([P], [segments]) == [expected]


def test_any_ready_operation_may_go_first():
    q = "Compute (2+3)*(9-4)."
    segs = ["9-4=5\n", "2+3=5\n", "5*5=25\n\\boxed{25}"]
    assert ExactProcessVerifier().score([q], [segs]) == [[1.0, 1.0, 1.0]]


def test_step_on_an_earlier_slip_is_wrong_in_graded_mode():
    segs = ["7+5=13\n", "13*3=39\n", "39-4=35\n\\boxed{35}"]
    assert ExactProcessVerifier("graded").score([P], [segs]) == [[0.0, 0.0, 0.0]]
    # 36-4 uses the true 36, but the response never computed it: not ready, so wrong; the box is
    # right. Verdicts T, F, F, T.
    segs = ["7+5=12\n", "12*3=37\n", "36-4=32\n\\boxed{32}"]
    assert ExactProcessVerifier("graded").score([P], [segs]) == [[1.0, 0.5, 0.5]]


def test_verifier_batch_contract():
    v = ExactProcessVerifier()
    out = v.score([P, "Compute 9*(8-6)+1."], [["7+5=12\n"], ["8-6=2\n9*2=18\n", "18+1=19\n\\boxed{19}"]])
    assert out == [[1.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="2 problems but 1"):
        v.score([P, P], [["x"]])
    with pytest.raises(ValueError, match="verifier mode"):
        ExactProcessVerifier("lenient")


def test_slips_terminate_on_negative_carried_values():
    from prpo_openrlhf.local.task import _slip

    rng = random.Random(0)
    assert all(_slip(rng, v) != v for v in (-50, -3, 0, 1, 99))
    assert _slip(rng, -50) < 0 and _slip(rng, 0) > 0

