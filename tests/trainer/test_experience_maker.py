"""PRPOExperienceMaker end to end on a local Ray cluster.

Real parts: vLLM CPU rollouts through OpenRLHF's rollout executor (the PRPO entropy executor,
loaded the way RolloutRayActor loads it) and PRPOSamplesGenerator; the outcome reward through
the same reward-function hook; OpenRLHF's RayActorGroup; the PRM actor group on its own
placement group; upstream's DeepSpeed policy and reference actors through the CPU device layer.
Stand-ins: the fp32 policy/reference actor (tests/trainer/cpu_policy_actor.py) where a test
compares with an fp32 HF forward; and, where upstream's own generate loop runs, a rollout actor that
replays the fixture's real vLLM responses (tests/trainer/replay_engine.py) so that no second
vLLM engine has to start.
"""
import asyncio
import copy

import pytest
import ray
import torch

N = 4  # rollouts per prompt
PROBLEMS = [("Compute 12*7.", "84"), ("What is 3+4?", "7")]


def _constant_half_prm(path):
    """The tiny PRM with a zeroed last layer: both logits 0, so every score is exactly 0.5."""
    from safetensors.torch import load_file, save_file

    from prpo_openrlhf.testing.tiny_models import write_tiny_prm

    write_tiny_prm(path)
    weights = load_file(str(path / "model.safetensors"))
    weights["score.2.weight"].zero_()
    weights["score.2.bias"].zero_()
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return str(path)


def _args(lm_path, estimator, *extra):
    from prpo_openrlhf.cli.train_prpo_ray import parse_args

    return parse_args([*extra, "--actor.model_name_or_path", lm_path, "--algo.advantage.estimator", estimator,
                       "--prm.model_name_or_path", "unused-here", "--prm.num_gpus_per_node", "1",
                       "--rollout.n_samples_per_prompt", str(N), "--rollout.micro_batch_size", "3",
                       "--vllm.num_engines", "1", "--algo.kl.use_loss", "--algo.kl.init_coef", "0.001",
                       "--prpo.min_gap", "4", "--prpo.k", "3"])


@pytest.fixture(scope="module")
def cluster():
    # Logical GPUs for upstream's DeepSpeed actors (one each, as on a cluster) and the PRM groups.
    ray.init(num_cpus=6, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def rollout_responses(tiny_lm_path, monkeypatch_module):
    """Real vLLM CPU responses through OpenRLHF's executor, and the samples generator for them."""
    from openrlhf.trainer.ray.vllm_engine import _load_agent_executor
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from prpo_openrlhf.cli.train_prpo_ray import ENTROPY_AGENT_MODULE, OUTCOME_REWARD_MODULE, _module_file
    from prpo_openrlhf.rollout.samples_generator import PRPOSamplesGenerator
    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env, shut_down
    from tests.rollout.test_openrlhf_path import InProcessRolloutEngine

    monkeypatch_module.setenv("PRPO_REMOTE_RM_URL", _module_file(OUTCOME_REWARD_MODULE))
    executor = _load_agent_executor(_module_file(ENTROPY_AGENT_MODULE))
    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    in_process_engine_env()
    llm = LLM(model=tiny_lm_path, **cpu_engine_kwargs(max_model_len=256))
    engine = InProcessRolloutEngine(llm)
    args = _args(tiny_lm_path, "prpo")
    params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=24, min_tokens=1, skip_special_tokens=False)

    async def run():
        jobs = []
        for problem, answer in PROBLEMS:
            prompt = tok.apply_chat_template([{"role": "user", "content": problem}], tokenize=False,
                                             add_generation_prompt=True)
            for i in range(N):
                p = copy.deepcopy(params)
                p.seed = 100 * len(jobs) + i
                jobs.append(executor.execute(prompt=prompt, label=answer, sampling_params=p, max_length=256,
                                             hf_tokenizer=tok, llm_engine=engine))
        return await asyncio.gather(*jobs)

    responses = asyncio.run(run())
    shut_down(llm)
    from types import SimpleNamespace

    generator = PRPOSamplesGenerator(strategy=SimpleNamespace(args=args), prompts_dataloader=None,
                                     eval_dataloader=None, tokenizer=tok, vllm_engines=[])
    return generator, responses


@pytest.fixture(scope="module")
def rollout_samples(rollout_responses):
    """Single-sample Experiences from real vLLM CPU responses, as the trainer receives them."""
    generator, responses = rollout_responses
    return [generator._process_response_into_experience(r, max_len=256) for r in responses]


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def policy_groups(cluster, tiny_lm_path):
    """Upstream's PolicyModelActor and ReferenceModelActor (DeepSpeed ZeRO-2 on gloo, bf16)
    through the CPU device layer, in RayActorGroups as train() builds them."""
    from openrlhf.trainer.ray.launcher import RayActorGroup, ReferenceModelActor
    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

    from prpo_openrlhf.trainer.cpu_device import cpu_model_actor, cpu_strategy, prepare_cpu_args

    args = _args(tiny_lm_path, "prpo")
    prepare_cpu_args(args)
    strategy = cpu_strategy(args)
    policy = RayActorGroup(1, 1, cpu_model_actor(PolicyModelActor))
    reference = RayActorGroup(1, 1, cpu_model_actor(ReferenceModelActor))
    ray.get(policy.async_init_model_from_pretrained(strategy, tiny_lm_path, 1, None)
            + reference.async_init_model_from_pretrained(strategy, tiny_lm_path))
    return policy, reference


@pytest.fixture(scope="module")
def fp32_groups(cluster, tiny_lm_path):
    """The fp32 stand-in (tests/trainer/cpu_policy_actor.py) for tests that compare with an fp32
    HF forward or count the actor's passes; DeepSpeed's actors load in bf16 only."""
    from openrlhf.trainer.ray.launcher import RayActorGroup
    from openrlhf.utils import get_strategy

    from tests.trainer.cpu_policy_actor import CPUPolicyActorStandIn

    strategy = get_strategy(_args(tiny_lm_path, "prpo"))
    groups = [RayActorGroup(1, 1, CPUPolicyActorStandIn, num_gpus_per_actor=0) for _ in range(2)]
    ray.get([r for g in groups for r in g.async_init_model_from_pretrained(strategy, tiny_lm_path)])
    return groups


@pytest.fixture(scope="module")
def prm_group(cluster, tiny_prm_path):
    from prpo_openrlhf.prm.ray_group import PRMActorGroup

    group = PRMActorGroup(tiny_prm_path, num_actors=1, backend="hf", max_failures=2)
    yield group
    group.shutdown()


def _maker(cls, args, groups, prm=None):
    from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController
    from openrlhf.utils import get_strategy
    from transformers import AutoTokenizer

    actor, reference = groups
    kwargs = {} if prm is None else {"prm": prm}
    return cls(actor, None, None, reference, FixedKLController(0.001), get_strategy(args),
               AutoTokenizer.from_pretrained(args.actor.model_name_or_path), **kwargs)


def _forward_calls(groups) -> list[dict]:
    """Per group: how often its (single) stand-in actor ran each log-prob method."""
    return [ray.get(g.async_run_method(method_name="forward_calls"))[0] for g in groups]


def test_rollouts_carry_entropies_and_graded_rewards(rollout_samples):
    assert len(rollout_samples) == N * len(PROBLEMS)
    for s in rollout_samples:
        assert s.entropies.shape == s.action_mask.shape and torch.all(s.entropies[0][s.action_mask[0] == 0] == 0)
        # The random tiny policy never writes \boxed{}: math-verify grades every rollout wrong.
        assert s.rewards.tolist() == [-1.0]


def test_prpo_experiences_end_to_end(rollout_samples, tiny_lm_path, policy_groups, prm_group):
    from prpo_openrlhf.trainer.experience_maker import PRPOExperienceMaker

    args = _args(tiny_lm_path, "prpo")
    maker = _maker(PRPOExperienceMaker, args, policy_groups, prm=prm_group)
    samples = copy.deepcopy(rollout_samples)
    for i, s in enumerate(samples):  # vary R inside each group so beta is not all zero
        s.rewards = torch.tensor([1.0 if i % 3 == 0 else -1.0])
    experiences = maker.make_experience_batch(samples)
    assert sum(len(e.index) for e in experiences) == len(samples)
    for exp in experiences:
        mask = exp.action_mask.bool()
        assert exp.advantages.shape == mask.shape and torch.isfinite(exp.advantages).all()
        assert torch.all(exp.advantages[~mask] == 0) and torch.equal(exp.returns, exp.advantages)
        assert exp.action_log_probs.shape == mask.shape
        scores = exp.info["prm_score_mean"]
        assert torch.all((scores > 0) & (scores < 1))
        assert exp.info["prm/wait_s"].min() >= 0 and exp.info["prm/segments_per_response"][0] >= 1
        # z is (r - 0.5) / 0.289 averaged over tokens; beta is R minus the group mean of R.
        torch.testing.assert_close(exp.info["prpo/z_mean"], (scores - 0.5) / 0.289)
        # Group 0 has R = [1, -1, -1, 1] (mean 0), group 1 has R = [-1, -1, 1, -1] (mean -0.5).
        beta = {0: 1.0, 1: -1.0, 2: -1.0, 3: 1.0, 4: -0.5, 5: -0.5, 6: 1.5, 7: -0.5}
        assert exp.info["prpo/beta"].tolist() == [beta[i] for i in exp.index]
    # Tokens of one segment share one advantage; the advantage changes only at a cut.
    first = experiences[0]
    row = first.advantages[0][first.action_mask[0].bool()]
    assert 1 <= len(torch.unique_consecutive(row)) <= args.prpo.k + 1


def test_constant_half_prm_reduces_prpo_to_openrlhf_dr_grpo(rollout_samples, tiny_lm_path, policy_groups,
                                                           tmp_path_factory):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    from prpo_openrlhf.prm.ray_group import PRMActorGroup
    from prpo_openrlhf.trainer.experience_maker import PRPOExperienceMaker

    samples = copy.deepcopy(rollout_samples)
    for i, s in enumerate(samples):
        s.rewards = torch.tensor([float(i % 4) - 1.5])  # varied outcomes inside each group
    prm = PRMActorGroup(_constant_half_prm(tmp_path_factory.mktemp("half_prm")), num_actors=1, backend="hf")
    try:
        ours = _maker(PRPOExperienceMaker, _args(tiny_lm_path, "prpo"), policy_groups, prm=prm)
        prpo = ours.make_experience_batch(copy.deepcopy(samples))
    finally:
        prm.shutdown()
    upstream = _maker(RemoteExperienceMaker, _args(tiny_lm_path, "dr_grpo"), policy_groups)
    dr_grpo = upstream.make_experience_batch(copy.deepcopy(samples))
    by_index = {i: (e, j) for e in dr_grpo for j, i in enumerate(e.index)}
    checked = 0
    for exp in prpo:
        for j, i in enumerate(exp.index):
            ref, k = by_index[i]
            width = exp.action_mask.shape[1]
            mask = exp.action_mask[j].bool()
            assert torch.equal(mask, ref.action_mask[k, :width].bool())
            # Upstream's cumulative returns also fill the prompt positions before the response
            # (masked out of its loss); the advantages that train the policy must agree exactly.
            torch.testing.assert_close(exp.advantages[j][mask], ref.advantages[k, :width][mask], atol=1e-6, rtol=0)
            assert torch.all(exp.advantages[j][~mask] == 0)
            checked += 1
    assert checked == len(samples)
    assert any(e.advantages.abs().max() > 0 for e in prpo)


def test_prm_actor_killed_mid_step_is_retried(rollout_samples, tiny_lm_path, policy_groups, prm_group):
    from prpo_openrlhf.trainer.experience_maker import PRPOExperienceMaker

    class KillAfterSubmit:
        """The real group; its actor is killed right after the step's PRM call was sent."""

        def score_async(self, problems, segments):
            pending = prm_group.score_async(problems, segments)
            ray.kill(prm_group.actors[0], no_restart=False)
            return pending

    failures = prm_group.total_failures
    maker = _maker(PRPOExperienceMaker, _args(tiny_lm_path, "prpo"), policy_groups, prm=KillAfterSubmit())
    experiences = maker.make_experience_batch(copy.deepcopy(rollout_samples))
    assert prm_group.total_failures > failures
    assert all(torch.isfinite(e.advantages).all() for e in experiences)


class CountingPRM:
    """The real PRM actor group; records how many responses each submission holds.

    ``on_submit``, when set, runs after each submission (``_generate`` releases a held prompt there).
    """

    def __init__(self, group):
        self.group, self.sizes, self.on_submit = group, [], None

    def score_async(self, problems, segments):
        self.sizes.append(len(problems))
        pending = self.group.score_async(problems, segments)
        if self.on_submit is not None:
            self.on_submit()
        return pending


@pytest.fixture(scope="module")
def replay_engine(cluster):
    from tests.trainer.replay_engine import ReplayRolloutEngine

    engine = ReplayRolloutEngine.remote()
    yield engine
    ray.kill(engine)


def _generate(rollout_responses, engine, args, maker, hold_second=False, scores=None):
    """Upstream's generate_samples on PRPOSamplesGenerator, fed by a replaying rollout actor.

    Wired as PRPOTrainer wires it: the experience maker's dispatcher is the group sink.
    ``scores``: prompt position -> the n outcome scores to replay for that group.
    """
    from types import SimpleNamespace

    from prpo_openrlhf.rollout.samples_generator import PRPOSamplesGenerator

    template, responses = rollout_responses
    prompts = list(dict.fromkeys(r["prompt"] for r in responses))  # the fixture's group order
    by_prompt = {p: copy.deepcopy([r for r in responses if r["prompt"] == p]) for p in prompts}
    for k, values in (scores or {}).items():
        for response, value in zip(by_prompt[prompts[k]], values):
            response["scores"] = response["reward"] = value
    ray.get(engine.load.remote(by_prompt, hold=prompts[1:] if hold_second else ()))
    maker.dispatcher.prm.on_submit = lambda: ray.get(engine.release.remote())
    generator = PRPOSamplesGenerator(
        strategy=SimpleNamespace(args=args), eval_dataloader=None, tokenizer=template.tokenizer,
        prompts_dataloader=[(None, prompts, [a for _, a in PROBLEMS], [None] * len(prompts))],
        vllm_engines=[engine])
    generator.group_sink = maker.dispatcher.submit
    samples, _, _, _ = generator.generate_samples(max_len=256, n_samples_per_prompt=N)
    return samples, ray.get(engine.held_calls.remote())


def test_prm_gets_each_prompt_group_during_generation(rollout_responses, rollout_samples, tiny_lm_path,
                                                      policy_groups, prm_group, replay_engine):
    """Upstream's generate loop: one PRM submission per prompt group, the first before the second
    group is even returned; scores equal one whole-batch PRM call; advantages equal the path
    where the experience maker submits every group itself."""
    from prpo_openrlhf.trainer.experience_maker import PRPOExperienceMaker

    prm = CountingPRM(prm_group)
    args = _args(tiny_lm_path, "prpo")  # the one-batch dataloader runs dry after two prompts
    maker = _maker(PRPOExperienceMaker, args, policy_groups, prm=prm)
    samples, held = _generate(rollout_responses, replay_engine, args, maker, hold_second=True)
    assert list(held.values()) == [True]  # the second group came back only after the first was submitted
    assert len(samples) == N * len(PROBLEMS) and prm.sizes == [N] * len(PROBLEMS)

    early = maker.make_experience_batch(samples)
    assert prm.sizes == [N] * len(PROBLEMS)  # nothing was left to submit
    assert all(e.info["prm/submitted_late"].eq(0).all() for e in early)

    # Per-group submissions give what one call over the whole batch gives (the entropy split
    # is per row, so segmenting the batch at once cuts the same segments).
    per_sample, stats = maker.dispatcher.collect(samples)
    ids, texts = maker.dispatcher.segment(samples)
    problems = [maker.dispatcher.problem_of(s.prompts[0]) for s in samples]
    whole, whole_stats = prm_group.score_async(problems, texts).result()
    assert stats.segments == whole_stats.segments == sum(len(t) for t in texts)
    for (scores, seg_ids), expected, row_ids in zip(per_sample, whole, ids):
        assert torch.equal(seg_ids, row_ids[: seg_ids.numel()])
        torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), atol=1e-5, rtol=0)

    # The experience maker submitting each group itself (rollouts made elsewhere): the fixture
    # holds the same rollouts in the same group order.
    plain = _maker(PRPOExperienceMaker, _args(tiny_lm_path, "prpo"), policy_groups, prm=prm)
    late = plain.make_experience_batch(copy.deepcopy(rollout_samples))
    assert prm.sizes == [N] * 2 * len(PROBLEMS)  # still one submission per group
    assert all(e.info["prm/submitted_late"].eq(len(rollout_samples)).all() for e in late)
    by_index = {i: e.advantages[j] for e in late for j, i in enumerate(e.index)}
    for exp in early:
        for j, i in enumerate(exp.index):
            torch.testing.assert_close(exp.advantages[j], by_index[i], atol=1e-6, rtol=0)


def test_groups_upstreams_dynamic_filter_drops_never_reach_the_prm(rollout_responses, tiny_lm_path,
                                                                   policy_groups, prm_group, replay_engine):
    """Range (-0.5, 0.5): the first group (scores averaging 0) is kept, the second (all -1,
    the tiny policy never answers) is dropped by upstream and must not be scored."""
    from prpo_openrlhf.trainer.experience_maker import PRPOExperienceMaker

    prm = CountingPRM(prm_group)
    args = _args(tiny_lm_path, "prpo", "--algo.dynamic_filtering_enable", "--algo.dynamic_filtering_range", "-0.5", "0.5")
    maker = _maker(PRPOExperienceMaker, args, policy_groups, prm=prm)
    samples, _ = _generate(rollout_responses, replay_engine, args, maker, scores={0: [1.0, -1.0, 1.0, -1.0]})
    assert len(samples) == N and {s.prompts[0] for s in samples} == {rollout_responses[1][0]["prompt"]}
    assert prm.sizes == [N]


def test_actor_entropy_source_segments_with_the_log_prob_pass(rollout_samples, tiny_lm_path, fp32_groups,
                                                              prm_group):
    """--prpo.entropy_source actor: entropies from the actor's own pass, equal to an HF forward's."""
    from transformers import AutoModelForCausalLM

    from prpo_openrlhf.algorithms.segmentation import segment_batch
    from prpo_openrlhf.rollout.entropy import logits_entropy
    from prpo_openrlhf.trainer.experience_maker import PRPOExperienceMaker

    samples = copy.deepcopy(rollout_samples)
    for s in samples:
        s.entropies = None  # as from a vLLM without the plugin
    prm = CountingPRM(prm_group)
    args = _args(tiny_lm_path, "prpo", "--prpo.entropy_source", "actor")
    maker = _maker(PRPOExperienceMaker, args, fp32_groups, prm=prm)
    before = _forward_calls(fp32_groups)
    experiences = maker.make_experience_batch(samples)
    assert prm.sizes == [N] * len(PROBLEMS)
    # The actor ran once per micro-batch, through forward_with_entropy only; upstream's
    # make_experience took those log probs instead of a second actor pass.
    calls = [{k: v - before[g].get(k, 0) for k, v in c.items() if v > before[g].get(k, 0)}
             for g, c in enumerate(_forward_calls(fp32_groups))]
    batches = -(-len(samples) // args.rollout.micro_batch_size)
    assert calls[0] == {"forward_with_entropy": batches}
    assert calls[1] == {"forward": batches}

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path, torch_dtype=torch.float32).eval()
    cut_count = 0
    for s in samples:
        width = s.action_mask.shape[1]
        position_ids = (s.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(s.sequences, attention_mask=s.attention_mask, position_ids=position_ids).logits
        expected = logits_entropy(logits[:, :-1])[:, -width:] * s.action_mask
        torch.testing.assert_close(s.entropies, expected, atol=1e-4, rtol=0)
        # The segments the PRM scored are Algorithm 1 on exactly these entropies.
        cuts = segment_batch(s.entropies, s.action_mask.bool(), method="entropy", k=args.prpo.k,
                             min_gap=args.prpo.min_gap)
        assert torch.equal(s.prm_job.segment_ids, cuts[0])
        cut_count += int(cuts.max())
    assert cut_count > 0  # some rollouts were cut at all

    # Those log probs equal the plain path's actor pass.
    plain = _maker(PRPOExperienceMaker, _args(tiny_lm_path, "prpo"), fp32_groups, prm=prm_group)
    reference = plain.make_experience_batch(copy.deepcopy(rollout_samples))
    by_index = {i: e.action_log_probs[j] for e in reference for j, i in enumerate(e.index)}
    for exp in experiences:
        for j, i in enumerate(exp.index):
            torch.testing.assert_close(exp.action_log_probs[j], by_index[i], atol=1e-5, rtol=0)


def test_random_split_seed_follows_the_prompt_not_the_finishing_order(rollout_samples, tiny_lm_path):
    """The random split cuts a group the same whichever group vLLM finishes first, and cuts a
    prompt's next round differently (a rerun reproduces the run's segments)."""
    from transformers import AutoTokenizer

    from prpo_openrlhf.trainer.prm_dispatch import PRMDispatcher

    args = _args(tiny_lm_path, "prpo", "--prpo.split", "random", "--prpo.min_gap", "2")
    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    first, second = rollout_samples[:N], rollout_samples[N:]
    forward = PRMDispatcher(None, tok, args.prpo, N)  # segment() never calls the PRM
    ids_first, _ = forward.segment(first)
    ids_second, _ = forward.segment(second)
    backward = PRMDispatcher(None, tok, args.prpo, N)
    assert torch.equal(backward.segment(second)[0], ids_second)
    assert torch.equal(backward.segment(first)[0], ids_first)
    assert int(ids_first.max()) > 0  # there were random cuts to compare
    rounds = [forward.segment(first)[0] for _ in range(3)]  # the same prompt in later epochs
    assert any(not torch.equal(r, ids_first) for r in rounds)


def test_a_finished_responses_segments_reach_the_prm_without_its_eos_text(rollout_responses, tiny_lm_path):
    """A response that ends on its own ends in EOS. Its last segment used to reach the PRM as
    ``\\boxed{14}<|im_end|>``: the exact verifier then judged every right answer's last line
    wrong (and a real PRM read an end-of-turn token inside the assistant turn). Here a finished,
    correct 2-step solution goes through upstream's _process_response_into_experience with
    entropy spikes at the line starts: every segment text is plain response text, together
    exactly the response, and the exact verifier scores every prefix 1."""
    from prpo_openrlhf.local.verifier import ExactProcessVerifier
    from prpo_openrlhf.rollout.agent_executor import RESPONSE_KEY
    from prpo_openrlhf.trainer.prm_dispatch import PRMDispatcher

    generator, responses = rollout_responses
    tok = generator.tokenizer
    problem, text = "Compute (3+4)*2.", "3+4=7\n7*2=14\n\\boxed{14}"
    response = copy.deepcopy(responses[0])
    prompt = tok.apply_chat_template([{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    body = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    starts = {len(prompt_ids) + i + 1 for i, t in enumerate(body[:-1]) if tok.decode([t]) == "\n"}
    response.update(prompt=prompt, observation_tokens=prompt_ids + body,
                    action_ranges=[(len(prompt_ids), len(prompt_ids) + len(body))],
                    rollout_log_probs=None,
                    **{RESPONSE_KEY: [5.0 if i in starts else 0.1 for i in range(len(prompt_ids) + len(body))]})
    sample = generator._process_response_into_experience(response, max_len=256)
    assert int(sample.sequences[0, -1]) == tok.eos_token_id

    args = _args(tiny_lm_path, "prpo", "--prpo.k", "2", "--prpo.min_gap", "2")
    dispatcher = PRMDispatcher(None, tok, args.prpo, 1)  # segment() never calls the PRM
    _, (segments,) = dispatcher.segment([sample])
    assert segments == ["3+4=7\n", "7*2=14\n", "\\boxed{14}"]
    assert ExactProcessVerifier().score([dispatcher.problem_of(sample.prompts[0])], [segments]) == [[1.0, 1.0, 1.0]]
