"""prpo-eval: MATH500 / AMC23 / AIME evaluation with the paper's protocol (PRPO_SPEC section 6).

    prpo-eval --model PATH [--benchmarks math500,amc23,aime24,aime25] [--backend vllm|hf]
    prpo-eval --compare DIR_A DIR_B ... --output_dir DIR   # one table/plot for several runs

Defaults: MATH500 greedy pass@1; the others 32 samples at T=0.7, top-p 0.9, seed 42, reported
as mean@32, with pass@k for k in 8..128 where n >= k. Rerunning the same command resumes.
Exit status: 0 done, 2 bad arguments or data, 3 samples still missing (--max_samples_this_run).
See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from prpo_openrlhf.eval.data import DEFAULT_BENCHMARKS, DataError
from prpo_openrlhf.eval.prompts import DEFAULT_TEMPLATE, TEMPLATES, PromptError
from prpo_openrlhf.eval.store import StoreError
from prpo_openrlhf.fileio import DiskFullError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        vals = [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"every k must be >= 1, got {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prpo-eval", description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--model", help="HF checkpoint directory or hub id")
    a("--benchmarks", type=_csv, default=list(DEFAULT_BENCHMARKS),
      help="comma list of names in --data_dir and/or paths to JSONL files with problem/answer")
    a("--data_dir", default=None, help="where benchmark names are looked up (default: data/)")
    a("--backend", choices=["vllm", "hf"], default="vllm")
    a("--output_dir", default=None, help="default: eval_results/<model dir name>")
    a("--label", default=None, help="row label in the tables (default: model dir name)")
    g = p.add_argument_group("protocol (defaults: the paper's)")
    g.add_argument("--greedy_benchmarks", type=_csv, default=["math500"],
                   help="benchmarks decoded greedily, one sample, pass@1")
    g.add_argument("--n_samples", type=int, default=32, help="samples per problem elsewhere")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top_p", type=float, default=0.9)
    g.add_argument("--seed", type=int, default=42, help="each sample's seed derives from it")
    g.add_argument("--max_new_tokens", type=int, default=2048)
    g.add_argument("--pass_k", type=_ints, default=[8, 16, 32, 64, 128])
    g.add_argument("--prompt_template", choices=TEMPLATES, default=DEFAULT_TEMPLATE)
    r = p.add_argument_group("run control")
    r.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    r.add_argument("--skip_bad_rows", action="store_true",
                   help="leave malformed rows out (counted) instead of stopping")
    r.add_argument("--max_samples_this_run", type=int, default=None,
                   help="generate at most N new samples, then stop (exit 3); rerun to go on")
    r.add_argument("--grader_timeout", type=float, default=None,
                   help="seconds per answer check (default: the grader's)")
    r.add_argument("--regrade", action="store_true", help="ignore cached verdicts")
    r.add_argument("--compare", nargs="+", metavar="DIR",
                   help="only merge the results.json of these runs into one report")
    e = p.add_argument_group("engine")
    e.add_argument("--tensor_parallel_size", type=int, default=1)
    e.add_argument("--gpu_memory_utilization", type=float, default=0.9)
    e.add_argument("--max_model_len", type=int, default=None)
    e.add_argument("--dtype", default="auto")
    e.add_argument("--enforce_eager", action="store_true")
    e.add_argument("--cpu_kv_cache_mib", type=int, default=256, help="vLLM KV cache on CPU")
    e.add_argument("--hf_batch_size", type=int, default=16)
    e.add_argument("--trust_remote_code", action="store_true")
    return p


def _check(p: argparse.ArgumentParser, args) -> None:
    """Checks that span flags, failing before any model loads."""
    if not args.compare and not args.model:
        p.error("--model is required (or --compare DIR ... to merge finished runs)")
    if args.compare and not args.output_dir:
        p.error("--compare needs --output_dir for the merged report")
    if args.n_samples < 1 or args.max_new_tokens < 1:
        p.error("--n_samples and --max_new_tokens must be >= 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.temperature <= 0 and any(b not in args.greedy_benchmarks for b in args.benchmarks):
        p.error("--temperature must be > 0 for sampled benchmarks; list greedy ones in "
                "--greedy_benchmarks instead")
    if not 0 < args.top_p <= 1:
        p.error("--top_p must be in (0, 1]")


def _compare(args) -> int:
    from prpo_openrlhf.eval import report

    rows = []
    for d in args.compare:
        path = Path(d) / "results.json"
        if not path.is_file():
            print(f"prpo-eval: no {path} (run prpo-eval there first)", file=sys.stderr)
            return 2
        res = json.loads(path.read_text())
        rows.append((res["label"], res))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = report.markdown(rows, rows[0][1]["pass_k"])
    (out / "results.md").write_text(text)
    report.plot_pass_at_k(rows, out / "pass_at_k.png")
    print(text)
    return 0


def config_from_args(args):
    from prpo_openrlhf.eval.generate import BackendOptions
    from prpo_openrlhf.eval.runner import EvalConfig

    opts = BackendOptions(
        model=args.model, dtype=args.dtype, tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager, cpu_kv_cache_mib=args.cpu_kv_cache_mib,
        hf_batch_size=args.hf_batch_size, trust_remote_code=args.trust_remote_code)
    out = args.output_dir or str(Path("eval_results") / Path(args.model.rstrip("/")).name)
    return EvalConfig(
        model=args.model, output_dir=out, benchmarks=args.benchmarks, data_dir=args.data_dir,
        backend=args.backend, label=args.label, greedy_benchmarks=args.greedy_benchmarks,
        n_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
        seed=args.seed, max_new_tokens=args.max_new_tokens, pass_k=args.pass_k,
        prompt_template=args.prompt_template, limit=args.limit, skip_bad_rows=args.skip_bad_rows,
        max_samples_this_run=args.max_samples_this_run, grader_timeout=args.grader_timeout,
        regrade=args.regrade, backend_options=opts)


def main(argv=None, backend=None) -> int:
    """Entry point; ``backend`` lets a caller reuse an already loaded generation backend."""
    # stdout carries the report; vLLM logs to stdout unless told otherwise (read at import).
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    p = build_parser()
    args = p.parse_args(argv)
    _check(p, args)
    if args.compare:
        return _compare(args)
    from prpo_openrlhf.eval.runner import RESULTS_JSON, RESULTS_MD, evaluate

    cfg = config_from_args(args)
    try:
        results = evaluate(cfg, backend=backend)
    except (DataError, StoreError, PromptError) as exc:
        print(f"prpo-eval: error: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:  # names the file; every finished sample is already on disk
        print(f"prpo-eval: error: {exc}", file=sys.stderr)
        return 1
    if results is None:
        return 3
    out = Path(cfg.output_dir)
    print((out / RESULTS_MD).read_text())
    print(f"results: {out / RESULTS_JSON}\nplot: {results['plot'] or '(no sampled benchmark)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
