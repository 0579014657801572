"""One evaluation run: load benchmarks, generate the missing samples, grade, report.

Resume semantics: the output directory's ``generations.jsonl`` is the source of truth. A
sample is identified by (benchmark, problem index, sample index); a rerun generates only keys
not yet in the file, so a finished sample is never regenerated. Settings that would change
what a sample means (model, backend, decoding, template, max_new_tokens) are pinned per
benchmark in ``run_config.json`` and a rerun with other values stops with the flag names.
A run holds the output directory's lock (``lock.OutputLock``) from before it reads anything
there until it returns, so a second run on the same directory stops at once.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from prpo_openrlhf.fileio import replace_atomically

from . import report
from .data import DEFAULT_BENCHMARKS, DataError, load_problems, resolve_benchmark
from .generate import BackendOptions, SampleRequest, make_backend
from .grading import grade_samples
from .lock import OutputLock
from .prompts import DEFAULT_TEMPLATE, prompt_token_ids
from .store import (GENERATION_FIELDS, GENERATIONS_FILE, GRADES_FILE, AppendOnlyJsonl, RunConfig,
                    StoreError, index_records, load_index, sample_seed, text_sha)

RESULTS_JSON, RESULTS_MD, PLOT_PNG = "results.json", "results.md", "pass_at_k.png"


@dataclass
class EvalConfig:
    model: str
    output_dir: str
    benchmarks: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    data_dir: str | None = None
    backend: str = "vllm"
    label: str | None = None
    greedy_benchmarks: list[str] = field(default_factory=lambda: ["math500"])
    n_samples: int = 32
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 42
    max_new_tokens: int = 2048
    pass_k: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    prompt_template: str = DEFAULT_TEMPLATE
    limit: int | None = None
    skip_bad_rows: bool = False
    max_samples_this_run: int | None = None
    grader_timeout: float | None = None
    regrade: bool = False
    backend_options: BackendOptions | None = None


@dataclass
class Bench:
    name: str
    file: str
    problems: list
    skipped: int
    greedy: bool
    n: int
    settings: dict


def _log(msg: str) -> None:
    print(f"[prpo-eval] {msg}", file=sys.stderr, flush=True)


def load_benchmarks(cfg: EvalConfig) -> list[Bench]:
    out = []
    for spec in cfg.benchmarks:
        name, path = resolve_benchmark(spec, cfg.data_dir)
        problems, bad = load_problems(path, skip_bad_rows=cfg.skip_bad_rows, limit=cfg.limit)
        if bad:
            _log(f"{name}: skipped {len(bad)} malformed row(s) of {path} (--skip_bad_rows)")
        greedy = name in cfg.greedy_benchmarks
        settings = {"model": cfg.model, "backend": cfg.backend,
                    "prompt_template": cfg.prompt_template, "max_new_tokens": cfg.max_new_tokens,
                    "greedy": greedy, "temperature": None if greedy else cfg.temperature,
                    "top_p": None if greedy else cfg.top_p, "seed": None if greedy else cfg.seed}
        out.append(Bench(name, str(path), problems, len(bad), greedy,
                         1 if greedy else cfg.n_samples, settings))
    if len({b.name for b in out}) != len(out):
        raise DataError(f"--benchmarks names a benchmark twice: {cfg.benchmarks}")
    return out


def _check_existing(benches: list[Bench], existing: dict) -> None:
    """Stored samples must answer the problem text the data file has now."""
    for b in benches:
        for p in b.problems:
            sha = text_sha(p.problem)
            for s in range(b.n):
                rec = existing.get((b.name, p.index, s))
                if rec is not None and rec.get("problem_sha") != sha:
                    raise StoreError(
                        f"{GENERATIONS_FILE} holds samples of {b.name} problem {p.index} "
                        f"({b.file}:{p.line}) for another problem text: the data file changed. "
                        "Use a new --output_dir.")


def _requests(cfg: EvalConfig, benches: list[Bench], existing: dict) -> list[SampleRequest]:
    missing = [(b, p, s) for b in benches for p in b.problems for s in range(b.n)
               if (b.name, p.index, s) not in existing]
    if cfg.max_samples_this_run is not None:
        missing = missing[:cfg.max_samples_this_run]
    if not missing:
        return []
    from transformers import AutoTokenizer

    opts = cfg.backend_options or BackendOptions(model=cfg.model)
    tok = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=opts.trust_remote_code)
    ids_cache: dict[str, tuple[int, ...]] = {}
    reqs = []
    for b, p, s in missing:
        if p.problem not in ids_cache:
            ids_cache[p.problem] = tuple(prompt_token_ids(tok, p.problem, cfg.prompt_template))
        reqs.append(SampleRequest(
            b.name, p.index, s, ids_cache[p.problem], text_sha(p.problem), b.greedy,
            cfg.temperature, cfg.top_p, sample_seed(cfg.seed, b.name, p.index, s),
            cfg.max_new_tokens))
    return reqs


def generate_missing(cfg: EvalConfig, benches: list[Bench], store: AppendOnlyJsonl,
                     existing: dict, backend=None) -> int:
    """Generate and store every missing sample (at most ``max_samples_this_run``)."""
    reqs = _requests(cfg, benches, existing)
    if not reqs:
        return 0
    own = backend is None
    if own:
        opts = cfg.backend_options or BackendOptions(model=cfg.model)
        longest = max(len(r.prompt_ids) for r in reqs)
        backend = make_backend(cfg.backend, opts, longest + cfg.max_new_tokens)

    stored = 0

    def on_finished(records: list[dict]) -> None:
        nonlocal stored
        stored += store.append(records)  # flushed and fsync'ed before it counts as done
        existing.update(index_records(records, GENERATIONS_FILE))

    try:
        with tqdm(total=len(reqs), desc="generating", unit="sample", dynamic_ncols=True) as pbar:
            backend.generate(reqs, on_finished, pbar)
    finally:
        if own and hasattr(backend, "close"):  # a vLLM engine core stopped before exit (vllm_cpu.shut_down)
            backend.close()
    return stored


def _grade(cfg: EvalConfig, benches: list[Bench], existing: dict, out: Path):
    """Verdicts of every wanted sample and grading counts per benchmark."""
    grades = AppendOnlyJsonl(out / GRADES_FILE)
    verdicts, stats = {}, {}
    total = sum(len(b.problems) * b.n for b in benches)
    with tqdm(total=total, desc="grading", unit="sample", dynamic_ncols=True) as pbar:
        for b in benches:
            wanted = [existing[(b.name, p.index, s)] for p in b.problems for s in range(b.n)]
            answers = {(b.name, p.index): p.answer for p in b.problems}
            v, stats[b.name] = grade_samples(wanted, answers, grades,
                                             timeout_s=cfg.grader_timeout,
                                             regrade=cfg.regrade, pbar=pbar)
            verdicts.update(v)
    return verdicts, stats


def evaluate(cfg: EvalConfig, backend=None) -> dict | None:
    """Run (or resume) an evaluation; the results dict, or None if samples are still missing."""
    out = Path(cfg.output_dir)
    with OutputLock(out):
        return _evaluate_locked(cfg, out, backend)


def _evaluate_locked(cfg: EvalConfig, out: Path, backend) -> dict | None:
    benches = load_benchmarks(cfg)
    run_cfg = RunConfig(out)
    for b in benches:
        run_cfg.check_and_record(b.name, b.settings)
    store = AppendOnlyJsonl(out / GENERATIONS_FILE)
    existing = load_index(store, GENERATION_FIELDS)
    if store.repaired_tail:
        _log(f"{store.path}: dropped a truncated last line (an interrupted write)")
    _check_existing(benches, existing)
    run_cfg.save()
    total = sum(len(b.problems) * b.n for b in benches)
    have = sum((b.name, p.index, s) in existing for b in benches for p in b.problems
               for s in range(b.n))
    todo = total - have
    if cfg.max_samples_this_run is not None:
        todo = min(todo, cfg.max_samples_this_run)
    _log(f"{have}/{total} samples already in {store.path}; generating {todo}")
    made = generate_missing(cfg, benches, store, existing, backend)
    left = sum((b.name, p.index, s) not in existing for b in benches for p in b.problems
               for s in range(b.n))
    if left:
        _log(f"stopped with {left} sample(s) still to generate; rerun the same command to "
             "continue")
        return None
    verdicts, stats = _grade(cfg, benches, existing, out)
    for name, st in stats.items():
        _log(f"graded {name}: {st['cached']} cached, {st['graded']} new, "
             f"{st['timeouts']} grader timeout(s), {st.get('screened', 0)} screened")
    return write_report(cfg, benches, existing, verdicts, stats, out, generated=made)


def write_report(cfg, benches, existing, verdicts, stats, out: Path, generated: int) -> dict:
    label = cfg.label or Path(cfg.model.rstrip("/")).name
    results = {"model": cfg.model, "label": label, "pass_k": list(cfg.pass_k),
               "generated_this_run": generated, "benchmarks": {}}
    for b in benches:
        results["benchmarks"][b.name] = report.benchmark_result(
            name=b.name, file=b.file, problems=b.problems, verdicts=verdicts,
            generations=existing, n=b.n, greedy=b.greedy, pass_k=cfg.pass_k,
            settings=b.settings, skipped_rows=b.skipped, grading=stats[b.name])
    rows = [(label, results)]
    results["plot"] = str(out / PLOT_PNG) if report.plot_pass_at_k(rows, out / PLOT_PNG) else None
    report.write_json(out / RESULTS_JSON, results)
    text = report.markdown(rows, cfg.pass_k)
    replace_atomically(out / RESULTS_MD, lambda tmp: tmp.write_text(text))
    return results
