"""Seeded synthetic multi-step arithmetic: problems, exact step-by-step solutions, noisy solutions.

A problem is an expression tree over small integers, e.g. ``((7+5)*3)-4``; every non-root
sub-expression is parenthesised so the evaluation order needs no precedence rules. Its solution
computes one operation per line, innermost first (post-order, left subtree first), and ends in
the answer box::

    7+5=12
    12*3=36
    36-4=32
    \\boxed{32}

Every intermediate value stays in ``[0, value_max]`` (rejection sampling), so the arithmetic a
tiny byte-level policy must learn is bounded. Noisy solutions (for the warm-up SFT) make an
arithmetic slip in a step with probability ``p_err`` and then carry the wrong value on
consistently, as a careless solver would; they are what gives the warmed-up policy errors that
RL can remove.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

OPS = ("+", "-", "*")
# Held-out problems, fixed per seed. Every consumer (warm-up SFT, RL prompts) excludes all of
# them, whatever the number evaluated: the 2-operation problems are few enough (~10^4) that a
# short SFT sees most of those it is not kept away from.
HELDOUT_SIZE = 512
# Allowed operation counts. One operation has only ~200 distinct problems, fewer than the
# held-out set; beyond 8 the rejection sampling of in-range values slows down (~1 ms/problem
# at 10) and the solutions outgrow any sensible --rollout.max_new_tokens of the tiny policy.
N_OPS_MIN, N_OPS_MAX = 2, 8
_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class TaskConfig:
    """What problems look like; the warm-up cache key and the splits derive from it."""
    n_ops: tuple[int, ...] = (2, 3)   # number of operations per problem, drawn uniformly
    operand_max: int = 9              # leaves are integers in [1, operand_max]
    value_max: int = 99               # every intermediate value lies in [0, value_max]
    ops: tuple[str, ...] = OPS
    prefix: str = "Compute "          # problem text = prefix + expression + "."


@dataclass
class Node:
    """A leaf (``op is None``, ``value`` set) or a binary operation over two children."""
    value: int
    op: str | None = None
    left: "Node | None" = None
    right: "Node | None" = None

    def render(self, root: bool = True) -> str:
        if self.op is None:
            return str(self.value)
        text = f"{self.left.render(False)}{self.op}{self.right.render(False)}"
        return text if root else f"({text})"


@dataclass(frozen=True)
class Step:
    left: int
    op: str
    right: int
    result: int

    def line(self) -> str:
        return f"{self.left}{self.op}{self.right}={self.result}"


@dataclass
class Problem:
    expression: str
    answer: int
    steps: list[Step] = field(default_factory=list)
    prefix: str = "Compute "

    @property
    def text(self) -> str:
        """The problem statement given to the policy and to the process verifier."""
        return f"{self.prefix}{self.expression}."

    def solution(self) -> str:
        return format_solution(self.steps, self.answer)


def parse_n_ops(value) -> tuple[int, ...]:
    """``"3,4"`` / ``3`` / ``(4, 3)`` -> ``(3, 4)``: the operation counts of a task, sorted, without
    duplicates (a problem's count is drawn uniformly from them). ValueError saying what is wrong."""
    if isinstance(value, int):
        value = (value,)
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError("expected comma-separated integers, e.g. 3,4")
    counts = tuple(sorted({int(p) for p in parts}))
    if counts[0] < N_OPS_MIN or counts[-1] > N_OPS_MAX:
        raise ValueError(f"operation counts must lie in [{N_OPS_MIN}, {N_OPS_MAX}]")
    return counts


def max_solution_bytes(cfg: TaskConfig) -> int:
    """Length in bytes of the longest correct solution of the task (EOS not included).

    A problem with n operations has n + 1 leaves (at most ``d_l`` digits each) and n - 1
    intermediate operands (at most ``d_v`` digits: values lie in [0, value_max]); each of its
    n lines adds the operator, ``=``, the result (``d_v`` digits) and a newline, and the box
    ``\\boxed{v}`` adds 8 + ``d_v``. So n (d_l + 2 d_v + 3) + d_l + 8 bytes, 8n + 9 for the
    default digits. The embedded policy's tokenizer is byte-level: bytes = tokens.
    """
    d_l = len(str(min(cfg.operand_max, cfg.value_max)))
    d_v = len(str(cfg.value_max))
    n = max(cfg.n_ops)
    return n * (d_l + 2 * d_v + 3) + d_l + 8


def format_solution(steps: list[Step], answer: int) -> str:
    return "".join(s.line() + "\n" for s in steps) + f"\\boxed{{{answer}}}"


def _random_tree(rng: random.Random, n_ops: int, cfg: TaskConfig) -> Node:
    if n_ops == 0:
        return Node(rng.randint(1, cfg.operand_max))
    n_left = rng.randint(0, n_ops - 1)
    left = _random_tree(rng, n_left, cfg)
    right = _random_tree(rng, n_ops - 1 - n_left, cfg)
    op = rng.choice(cfg.ops)
    return Node(_APPLY[op](left.value, right.value), op, left, right)


def _values_in_range(node: Node, cfg: TaskConfig) -> bool:
    if not 0 <= node.value <= cfg.value_max:
        return False
    return node.op is None or (_values_in_range(node.left, cfg) and _values_in_range(node.right, cfg))


def _steps(node: Node, out: list[Step]) -> list[Step]:
    """Post-order, left subtree first: the canonical solution order."""
    if node.op is not None:
        _steps(node.left, out)
        _steps(node.right, out)
        out.append(Step(node.left.value, node.op, node.right.value, node.value))
    return out


def sample_problem(rng: random.Random, cfg: TaskConfig = TaskConfig()) -> Problem:
    """One problem from ``rng`` (rejection-sampled until every value is in range)."""
    n_ops = rng.choice(cfg.n_ops)
    while True:
        tree = _random_tree(rng, n_ops, cfg)
        if _values_in_range(tree, cfg):
            return Problem(tree.render(), tree.value, _steps(tree, []), cfg.prefix)


class ArithmeticTask:
    """Train / held-out splits of one seeded task.

    The held-out set is fixed by ``seed``; training problems are drawn from a stream seeded by
    ``(seed, stream)`` and never equal a held-out expression.
    """

    def __init__(self, cfg: TaskConfig = TaskConfig(), seed: int = 0, n_heldout: int = HELDOUT_SIZE):
        self.cfg = cfg
        self.seed = seed
        rng = random.Random(f"heldout-{seed}")
        self.heldout: list[Problem] = []
        seen: set[str] = set()
        while len(self.heldout) < n_heldout:
            p = sample_problem(rng, cfg)
            if p.expression not in seen:
                seen.add(p.expression)
                self.heldout.append(p)
        self._heldout_set = seen

    def train_batch(self, n: int, stream: str | int) -> list[Problem]:
        """``n`` training problems, a pure function of (seed, stream): resumable by step."""
        rng = random.Random(f"train-{self.seed}-{stream}")
        out: list[Problem] = []
        while len(out) < n:
            p = sample_problem(rng, self.cfg)
            if p.expression not in self._heldout_set:
                out.append(p)
        return out


_SLIPS = (-10, -2, -1, 1, 2, 10)


def _slip(rng: random.Random, value: int) -> int:
    """A plausible arithmetic slip: off by 1, 2 or 10, never the right value, not negative
    unless the value already is (a slip carried into a subtraction can make it so)."""
    options = [value + d for d in _SLIPS if value + d >= 0] or [value + d for d in _SLIPS]
    return rng.choice(options)


def noisy_solution(problem: Problem, rng: random.Random, p_err: float) -> str:
    """The solution with a slip per step with probability ``p_err``, carried on consistently."""
    tree = parse_expression(problem.expression)
    steps: list[Step] = []

    def walk(node: Node) -> int:
        if node.op is None:
            return node.value
        a, b = walk(node.left), walk(node.right)
        result = _APPLY[node.op](a, b)
        if rng.random() < p_err:
            result = _slip(rng, result)
        steps.append(Step(a, node.op, b, result))
        return result

    answer = walk(tree)
    return format_solution(steps, answer)


# ---- parsing (shared with the verifier) -------------------------------------------------

_EXPR_RE = re.compile(r"[0-9+\-*()\s]*\d[0-9+\-*()\s]*")


def parse_expression(text: str) -> Node:
    """Parse the arithmetic expression inside a problem statement into a tree.

    Accepts the statement (``"Compute ((7+5)*3)-4."``) or the bare expression; only integers,
    ``+ - *`` and parentheses. Raises ValueError naming the text otherwise.
    """
    candidates = [m.group(0).strip() for m in _EXPR_RE.finditer(text)]
    candidates = [c for c in candidates if any(op in c for op in OPS) or c.isdigit()]
    if not candidates:
        raise ValueError(f"no arithmetic expression in problem text {text!r}")
    tokens = re.findall(r"\d+|[+\-*()]", max(candidates, key=len))
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom() -> Node:
        tok = take() if peek() is not None else None
        if tok == "(":
            node = expr()
            if take() != ")":
                raise ValueError(f"unbalanced parentheses in {text!r}")
            return node
        if tok is None or not tok.isdigit():
            raise ValueError(f"unexpected {tok!r} in expression of {text!r}")
        return Node(int(tok))

    def term() -> Node:
        node = atom()
        while peek() == "*":
            take()
            rhs = atom()
            node = Node(node.value * rhs.value, "*", node, rhs)
        return node

    def expr() -> Node:
        node = term()
        while peek() in ("+", "-"):
            op = take()
            rhs = term()
            node = Node(_APPLY[op](node.value, rhs.value), op, node, rhs)
        return node

    try:
        tree = expr()
    except IndexError:
        raise ValueError(f"truncated expression in {text!r}") from None
    if pos != len(tokens):
        raise ValueError(f"trailing tokens in expression of {text!r}")
    return tree
