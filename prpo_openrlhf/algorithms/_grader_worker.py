"""One grader worker process (``python -m prpo_openrlhf.algorithms._grader_worker``).

Protocol: one JSON object per line. The worker writes ``{"ready": true}`` once warmed up,
then for every job ``{"id", "response", "reference", "soft_s", "hard_s"}`` read from stdin
(``response``: the part of a response around its final answer, ``_answer.answer_context``) it
writes ``{"id", "ok", "status", "elapsed"}`` (status: ok | timeout | error). It exits at EOF,
i.e. when the parent closes the pipe or dies.

The parent's kill at ``hard_s`` is the guarantee. Two cheaper layers sit inside: a SIGALRM
soft deadline interrupts Python-level SymPy loops (the worker survives, no restart cost), and
a per-job RLIMIT_CPU makes the kernel end a worker stuck in C code even if the parent is gone.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time

from prpo_openrlhf.algorithms._answer import (
    SoftTimeout,
    quiet_math_verify,
    soft_deadline,
    verify_response,
)

# (reference, answer) pairs that touch the SymPy paths first used by intervals, tuples, sets,
# matrices, symbolic simplification and answers in several boxes: their one-off set-up costs (up
# to seconds) are paid at start-up, not by the first real answer. A bare answer is boxed.
_WARM_UP = (
    ("\\frac{1}{2}", "0.5"),
    ("(-\\infty, 2]", "(-\\infty,2]"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("x^2+2x", "x(x+2)"),
    ("3+4i", "4i+3"),
    ("30^\\circ", "30"),
    ("\\text{(C)}", "C"),
    ("1, -2", "so $\\boxed{1}$ and $\\boxed{-2}$."),  # several boxes, math environments
    ("(2, 2), (6, 2)", "\\[\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}\\]"),
)


def _limit_resources(memory_mb: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU must not leave core files
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _arm_cpu_limit(hard_s: float) -> None:
    """Kernel-enforced backstop: SIGXCPU once this job has used hard_s + 5 CPU-seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + hard_s) + 5
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def grade_job(job: dict) -> dict:
    """Verdict of one job; never raises (a timeout or error is a False verdict)."""
    t0 = time.monotonic()
    ok, status = False, "ok"
    try:
        try:
            with soft_deadline(job.get("soft_s")):
                ok = verify_response(job["response"], job["reference"])
        except SoftTimeout:
            status = "timeout"
        except Exception:  # RecursionError and MemoryError (RLIMIT_AS) included
            status = "error"
    except SoftTimeout:  # the alarm fired between the work and its cancellation
        status = "timeout"
    return {"id": job["id"], "ok": bool(ok) and status == "ok", "status": status,
            "elapsed": time.monotonic() - t0}


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    _limit_resources(memory_mb)
    # Answers go to a private copy of stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="ascii")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    quiet_math_verify()
    for gold, response in _WARM_UP:
        if "\\boxed" not in response:
            response = f"The answer is $\\boxed{{{response}}}$."
        grade_job({"id": -1, "response": response, "reference": gold, "soft_s": 10.0})

    def send(msg: dict) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    send({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        job = json.loads(line)
        _arm_cpu_limit(float(job.get("hard_s") or 60.0))
        send(grade_job(job))


if __name__ == "__main__":
    main()
