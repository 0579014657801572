"""Step-labelled data and step-level evaluation for the learned PRM of the arithmetic task.

A solution is a response of the shipped policy (sampled at temperature 1) or a noisy solution
(``task.noisy_solution``: a slip per step with probability ``p_err``, carried on). Its token ids
(EOS appended when the response ended) are cut into segments, each segment's text is decoded
without special tokens, and the segments are labelled with the exact verifier's strict prefix
scores: 1 while every completed line so far is right, 0 from the first wrong one on (Math-Shepherd
/ PRM800K style, with exact labels). The PRM input is what the scorers send:
``PRMInputBuilder.encode(problem, segments).ids``, one ``<extra_0>`` after each segment.

Cuts fall at line ends (one line = one step; the last segment is the rest, the ``\\boxed{}``
line) or, for a share of the training data, also at random tokens inside lines, as the entropy,
uniform and random splits of the trainer place them. The verifier judges only completed lines, so
a half-written step scores like the prefix before it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass
class Example:
    ids: list[int]      # PRM input ids, ending at the last step tag
    labels: list[int]   # one 0/1 label per step tag, in order
    start: int          # index in ids of the first response token


def line_cuts(ids: list[int], newline_id: int, special: set[int]) -> list[int]:
    """Token positions just after each newline that some ordinary token follows (no empty step)."""
    return [i + 1 for i, t in enumerate(ids[:-1]) if t == newline_id
            and any(u not in special for u in ids[i + 1:])]


def random_cuts(ids: list[int], newline_id: int, special: set[int], rng: random.Random,
                max_cuts: int) -> list[int]:
    """Each line end kept with probability 1/2, plus 1 to ``max_cuts`` cuts at random tokens."""
    cuts = {c for c in line_cuts(ids, newline_id, special) if rng.random() < 0.5}
    if len(ids) > 1:
        cuts |= {rng.randrange(1, len(ids)) for _ in range(rng.randint(1, max_cuts))}
    return sorted(cuts)


def segment_texts(tok, ids: list[int], cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(ids)]
    return [tok.decode(ids[a:b], skip_special_tokens=True) for a, b in zip(bounds, bounds[1:])]


def step_labels(verifier, problem: str, segments: list[str]) -> list[int]:
    """1 where the exact verifier's strict prefix score is 1.0, else 0."""
    return [int(s == 1.0) for s in verifier.score_one(problem, segments)]


def encode(builder, problem: str, segments: list[str], labels: list[int]) -> Example:
    """The example of one segmented response, as the scorers send it."""
    enc = builder.encode(problem, segments)
    if enc.truncated or enc.stripped_tags:
        raise ValueError(f"PRM input of {problem!r} does not fit max_length={builder.max_length} "
                         f"({enc.full_length} tokens) or holds a step tag")
    body = builder.tokenizer.encode("".join(segments), add_special_tokens=False)
    return Example(enc.ids, labels, len(enc.ids) - len(body) - len(segments))


def sample_responses(policy, tok, problems, n: int, *, temperature: float, max_new_tokens: int,
                     seed: int, batch_size: int = 256):
    """``n`` responses per problem from the policy (HF generate; grouped by problem)."""
    from prpo_openrlhf.local.sampling import HFSampler, chat_prompt_ids

    prompts = chat_prompt_ids(tok, [p.text for p in problems])  # as the launch script's chat template renders it
    return HFSampler(policy, tok, batch_size=batch_size).generate(prompts, n, temperature, max_new_tokens, seed)


def training_examples(cfg, policy, tok, builder, progress: bool = False) -> list[Example]:
    """The recipe's training set, a pure function of ``cfg``: per training problem
    ``policy_samples`` sampled responses and ``noisy_samples`` noisy solutions, shuffled."""
    from tqdm import tqdm

    from prpo_openrlhf.local.task import ArithmeticTask, noisy_solution
    from prpo_openrlhf.local.verifier import ExactProcessVerifier

    per = cfg.policy_samples + cfg.noisy_samples
    n_problems = -(-cfg.steps * cfg.batch_size // per)
    task = ArithmeticTask(cfg.policy.task, seed=cfg.policy.task_seed)
    problems = task.train_batch(n_problems, f"prm-{cfg.seed}")
    verifier = ExactProcessVerifier("strict")
    newline = tok.encode("\n", add_special_tokens=False)[0]
    special = set(tok.all_special_ids)
    rng = random.Random(f"prm-data-{cfg.seed}")
    out: list[Example] = []
    chunk = 512
    bar = tqdm(total=n_problems, desc="PRM data", disable=not progress, dynamic_ncols=True)
    for start in range(0, n_problems, chunk):
        part = problems[start: start + chunk]
        samples = sample_responses(policy, tok, part, cfg.policy_samples, temperature=cfg.temperature,
                                   max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 1_000_003 + start) \
            if cfg.policy_samples else []
        todo = []  # (problem, response ids with EOS when it ended)
        for i, p in enumerate(part):
            todo += [(p, s.response_ids) for s in samples[i * cfg.policy_samples: (i + 1) * cfg.policy_samples]]
            todo += [(p, tok.encode(noisy_solution(p, rng, cfg.p_err), add_special_tokens=False) + [tok.eos_token_id])
                     for _ in range(cfg.noisy_samples)]
        for p, ids in todo:
            mid = rng.random() < cfg.mid_cut_share
            cuts = random_cuts(ids, newline, special, rng, cfg.max_mid_cuts) if mid else \
                line_cuts(ids, newline, special)
            segs = segment_texts(tok, ids, cuts)
            out.append(encode(builder, p.text, segs, step_labels(verifier, p.text, segs)))
        bar.update(len(part))
    bar.close()
    rng.shuffle(out)
    return out


# ---- evaluation -----------------------------------------------------------------------------

def roc_auc(scores: list[float], labels: list[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count 1/2); None when one class is absent."""
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid_rank = (i + j) / 2 + 1  # average 1-based rank of the tie group
        rank_sum += mid_rank * sum(labels[order[t]] for t in range(i, j + 1))
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _summary(scores: list[list[float]], labels: list[list[int]]) -> dict:
    flat_s = [s for row in scores for s in row]
    flat_l = [v for row in labels for v in row]
    auc = roc_auc(flat_s, flat_l)
    n = max(len(flat_l), 1)
    return {"auc": None if auc is None else round(auc, 4), "segments": len(flat_l),
            "segments_per_response": round(len(flat_l) / max(len(labels), 1), 3),
            "positive_rate": round(sum(flat_l) / n, 4),
            "accuracy_at_0.5": round(sum((s >= 0.5) == bool(v) for s, v in zip(flat_s, flat_l)) / n, 4)}


def heldout_solutions(cfg, policy, tok):
    """(problems, samples): ``eval_samples`` responses per held-out problem of the shipped policy."""
    from prpo_openrlhf.local.task import ArithmeticTask

    task = ArithmeticTask(cfg.policy.task, seed=cfg.policy.task_seed)
    problems = task.heldout[: cfg.eval_problems]
    samples = sample_responses(policy, tok, problems, cfg.eval_samples, temperature=cfg.temperature,
                               max_new_tokens=cfg.max_new_tokens, seed=10_007 + cfg.seed)
    return [p for p in problems for _ in range(cfg.eval_samples)], samples


def split_segments(policy, tok, samples, splits: list[tuple[str, int, int]], seed: int) -> dict:
    """Segment texts per response for line ends and for each (method, k, min_gap) of ``splits``,
    cut as the trainer cuts them (``segment_batch`` over the policy's token entropies at
    temperature 1, here from an HF forward pass; segment text without special tokens)."""
    from prpo_openrlhf.algorithms.segmentation import segment_batch
    from prpo_openrlhf.local.sampling import decode_segments, response_entropies

    newline = tok.encode("\n", add_special_tokens=False)[0]
    special = set(tok.all_special_ids)
    out = {"line": [segment_texts(tok, s.response_ids, line_cuts(s.response_ids, newline, special))
                    for s in samples]}
    if not splits:
        return out
    ent, action_mask = response_entropies(policy.eval(), samples, tok.pad_token_id)
    for method, k, gap in splits:
        seg_ids = segment_batch(ent, action_mask, method, k, gap, seed)
        out[f"{method}_k{k}_gap{gap}"] = decode_segments(tok, samples, seg_ids)
    return out


def evaluate(prm_path: str, cfg, policy_path: str, *, backend: str = "hf", splits=None, log=print) -> dict:
    """Step-level ROC-AUC of the PRM at ``prm_path`` against the exact verifier (strict labels) on
    the held-out problems, at line ends and at the cut points of the trainer's splits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prpo_openrlhf.local.verifier import ExactProcessVerifier
    from prpo_openrlhf.prm import PRMScorer

    splits = [(m, cfg.eval_k, cfg.eval_min_gap) for m in ("entropy", "uniform", "random")] if splits is None \
        else splits
    tok = AutoTokenizer.from_pretrained(policy_path)
    policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32).eval()
    problems, samples = heldout_solutions(cfg, policy, tok)
    texts = [p.text for p in problems]
    by_split = split_segments(policy, tok, samples, splits, cfg.eval_split_seed)
    verifier = ExactProcessVerifier("strict")
    scorer = PRMScorer(prm_path, backend, device="cpu")
    report = {"problems": cfg.eval_problems, "samples_per_problem": cfg.eval_samples,
              "responses": len(samples), "backend": backend}
    try:
        for name, segs in by_split.items():
            labels = [step_labels(verifier, t, s) for t, s in zip(texts, segs)]
            report[name] = _summary(scorer.score(texts, segs), labels)
            log(f"  {name}: AUC {report[name]['auc']} over {report[name]['segments']} segments "
                f"({report[name]['positive_rate']:.1%} positive)")
    finally:
        scorer.close()
    return report
