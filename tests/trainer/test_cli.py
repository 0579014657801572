"""train_prpo_ray's parser: every upstream flag, PRPO's flags, the example scripts, bad combos."""
import os
import subprocess
from pathlib import Path

import pytest

from prpo_openrlhf.cli import prpo_flags
from prpo_openrlhf.cli._upstream import upstream_parser
from prpo_openrlhf.cli.train_prpo_ray import build_parser, parse_args

SCRIPTS = sorted((Path(__file__).parents[2] / "examples" / "scripts").glob("train_*.sh"))
BASE = ["--actor.model_name_or_path", "m", "--vllm.num_engines", "1", "--rollout.n_samples_per_prompt", "4"]


def _script_args(script: Path) -> list[str]:
    out = subprocess.run(["bash", str(script)], capture_output=True, check=True,
                         env={**os.environ, "PRPO_PRINT_ARGS": "1"})
    return out.stdout.decode().split("\0")[:-1]


def test_parser_keeps_every_upstream_flag_and_default():
    ours = {a.dest: a for a in build_parser()._actions}
    upstream = {a.dest: a for a in upstream_parser()._actions}
    assert len(upstream) > 150
    for dest, action in upstream.items():
        assert dest in ours, dest
        assert ours[dest].default == action.default, dest
    estimator = ours["algo.advantage.estimator"]
    assert {"group_norm", "dr_grpo", "reinforce", *prpo_flags.PRM_ESTIMATORS} <= set(estimator.choices)
    assert {"prm.model_name_or_path", "prm.remote_url", "prpo.k", "prpo.min_gap", "prpo.entropy_source"} <= set(ours)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_example_script_parses(script):
    argv = _script_args(script)
    args = parse_args(argv)
    estimator = argv[argv.index("--algo.advantage.estimator") + 1]
    assert args.algo.advantage.estimator == estimator
    assert args.rollout.n_samples_per_prompt == 8 and args.prpo.k == 5 and args.prpo.min_gap == 10
    assert args.algo.kl.use_loss and args.algo.kl.init_coef == 0.001 and args.actor.eps_clip == 0.2
    # The same outcome reward for every method, unless a user brings their own.
    package = Path(prpo_flags.__file__).parents[1]
    assert args.prpo.reward_urls == str(package / "trainer" / "outcome_reward.py")
    if estimator in prpo_flags.PRM_ESTIMATORS:
        assert args.prm.model_name_or_path or args.prm.remote_url
        # PRPO's rollouts go through the entropy executor, which takes over the reward hook.
        assert args.train.agent_func_path == str(package / "rollout" / "entropy_agent.py")
        assert args.reward.remote_url == ["agent"]
    else:
        assert args.train.agent_func_path is None and args.reward.remote_url == [args.prpo.reward_urls]


def test_all_baselines_have_a_script():
    estimators = {_script_args(s)[_script_args(s).index("--algo.advantage.estimator") + 1] for s in SCRIPTS}
    assert {"prpo", "group_norm", "reinforce", "reinforce_baseline", "prm_avg", "pure", "prm_avg_prpo"} <= estimators


@pytest.mark.parametrize("extra, message", [
    (["--algo.advantage.estimator", "prpo"], "--prm.model_name_or_path, --prm.remote_url or --prm.backend exact"),
    (["--algo.advantage.estimator", "prpo", "--prm.model_name_or_path", "p", "--prm.remote_url", "http://x"],
     "are exclusive"),
    (["--algo.advantage.estimator", "prm_avg", "--prm.model_name_or_path", "p", "--rollout.n_samples_per_prompt", "1"],
     "--rollout.n_samples_per_prompt must be > 1"),
    (["--algo.advantage.estimator", "prpo", "--prm.model_name_or_path", "p", "--vllm.num_engines", "0"],
     "--prpo.entropy_source vllm needs vLLM rollouts"),
    (["--algo.advantage.estimator", "prpo", "--prm.model_name_or_path", "p", "--prm.num_gpus_per_node", "0"],
     "its own GPUs"),
    (["--algo.advantage.estimator", "prpo", "--prm.model_name_or_path", "p", "--algo.kl.init_coef", "0.01"],
     "add --algo.kl.use_loss"),
    (["--algo.advantage.estimator", "dr_grpo", "--train.async_enable"], "--train.async_enable is not supported"),
    (["--algo.advantage.estimator", "prpo", "--prm.model_name_or_path", "p", "--prm.backend", "hf",
      "--prm.async_engine"], "--prm.async_engine runs vLLM's async engine"),
    (["--algo.advantage.estimator", "prpo", "--prm.model_name_or_path", "p", "--prm.coalesce",
      "--prm.async_engine"], "excludes --prm.coalesce"),
])
def test_bad_combinations_fail_at_start_up_naming_the_flags(extra, message):
    with pytest.raises(SystemExit, match=message.replace(".", r"\.").replace("+", r"\+")):
        parse_args(BASE + extra)


def test_upstream_estimators_keep_working_without_a_prm():
    args = parse_args(BASE + ["--algo.advantage.estimator", "dr_grpo"])
    assert args.algo.advantage.estimator == "dr_grpo" and args.critic.model_name_or_path is None


def test_actor_entropy_source_is_accepted():
    args = parse_args(BASE + ["--algo.advantage.estimator", "prpo", "--prm.model_name_or_path", "p", "--algo.kl.use_loss",
                              "--prpo.entropy_source", "actor"])
    assert args.prpo.entropy_source == "actor" and args.prpo.split == "entropy"


def test_prm_gpus_never_overlap_the_policy():
    args = parse_args(BASE + ["--algo.advantage.estimator", "prpo", "--prm.model_name_or_path", "p", "--algo.kl.use_loss",
                              "--prm.num_gpus_per_node", "8", "--actor.num_gpus_per_node", "4",
                              "--vllm.num_engines", "2", "--ref.num_gpus_per_node", "2"])
    assert sum(prpo_flags.gpu_demand(args).values()) == 16
    prpo_flags.check_gpu_budget(args, cluster_gpus=16)
    with pytest.raises(SystemExit, match=r"need 16 GPUs but the Ray cluster has 8"):
        prpo_flags.check_gpu_budget(args, cluster_gpus=8)


def test_actor_entropy_policy_class_is_upstreams_plus_the_entropy_pass():
    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

    from prpo_openrlhf.trainer.policy_actor import EntropyForwardMixin, policy_actor_class

    cls = policy_actor_class().__ray_actor_class__
    assert issubclass(cls, PolicyModelActor.__ray_actor_class__) and issubclass(cls, EntropyForwardMixin)
    assert cls.forward is PolicyModelActor.__ray_actor_class__.forward  # upstream's pass stays as it is


def test_prompt_row_without_the_label_key_stops_the_run_before_ray_starts(tmp_path):
    from prpo_openrlhf.cli.train_prpo_ray import main

    data = tmp_path / "prompts.jsonl"
    data.write_text('{"problem": "1+1?", "answer": "2"}\n\n{"problem": "2+2?", "solution": "4"}\nnot json\n')
    with pytest.raises(SystemExit) as err:
        main([*BASE, "--data.prompt_dataset", str(data), "--data.input_key", "problem",
              "--data.label_key", "answer", "--algo.advantage.estimator", "group_norm"])
    message = str(err.value)
    assert str(data) in message and "2 bad row(s)" in message
    assert f"{data}:3: no 'answer' (--data.label_key); its keys: ['problem', 'solution']" in message
    assert f"{data}:4: invalid JSON" in message
    import ray

    assert not ray.is_initialized()


def _stopped(data, *extra):
    """The message the run stops with, checked to come before Ray starts."""
    from prpo_openrlhf.cli.train_prpo_ray import main

    with pytest.raises(SystemExit) as err:
        main([*BASE, "--data.prompt_dataset", str(data), "--data.input_key", "problem",
              "--data.label_key", "answer", "--algo.advantage.estimator", "group_norm", *extra])
    import ray

    assert not ray.is_initialized()
    return str(err.value)


def test_prompt_rows_with_null_empty_or_non_finite_values_stop_the_run_naming_each(tmp_path):
    """The row checks of prpo-eval, on the input and label keys the run reads."""
    bad = ['{"problem": null, "answer": "2"}', '{"problem": "1+1?", "answer": ""}',
           '{"problem": "1+1?", "answer": NaN}', '{"problem": "1+1?", "answer": null}',
           '{"problem": "1+1?", "answer": 1e999}', '{"problem": " \\n ", "answer": "2"}',
           '{"problem": ["1+1?"], "answer": "2"}', '{"problem": "1+1?", "answer": "\\u200b"}']
    good = '{"problem": "1+1?", "answer": "2"}'
    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join([good, *bad, good, good, '{"problem": "2+2?", "answer": 4}']) + "\n"
                    + "\n".join([good] * 25 + bad[:3]) + "\n")
    message = _stopped(data)
    lines = [*range(2, 10), 38, 39, 40]
    assert f"{len(lines)} bad row(s)" in message
    for line in lines:  # every bad row is named, past the first few too
        assert f"{data}:{line}:" in message, (line, message)
    assert f"{data}:2: missing or empty 'problem' (--data.input_key)" in message
    assert f"{data}:3: missing or empty 'answer' (--data.label_key)" in message
    assert f"{data}:4: invalid JSON (NaN is not a JSON value)" in message
    assert f"{data}:6: 'answer' (--data.label_key) is not a finite number (it parses to inf)" in message
    assert f"{data}:7: 'problem' (--data.input_key) is blank" in message
    for line in (1, 10, 11, 12):
        assert f"{data}:{line}:" not in message


def test_chat_rows_are_checked_when_the_chat_template_reads_them(tmp_path):
    data = tmp_path / "chats.json"
    data.write_text('[{"problem": [{"role": "user", "content": "1+1?"}], "answer": "2"},\n'
                    ' {"problem": [], "answer": "2"},\n'
                    ' {"problem": [{"role": "user", "content": null}], "answer": "2"}]\n')
    message = _stopped(data, "--data.apply_chat_template")
    assert "2 bad row(s)" in message and "row 1:" not in message
    assert f"{data}: row 2: missing or empty 'problem' (--data.input_key)" in message
    assert f"{data}: row 3: 'problem' (--data.input_key) message 1 has no text content" in message


def test_needs_vllm_entropy_only_for_prm_estimators_splitting_at_vllm_entropy():
    """The rule both the parser (entropy executor) and the samples generator (entropies required) use."""
    def needs(*extra):
        return prpo_flags.needs_vllm_entropy(parse_args([*BASE, "--prm.model_name_or_path", "p", "--algo.kl.use_loss", *extra]))

    assert needs("--algo.advantage.estimator", "prpo")
    for estimator in ("group_norm", "reinforce", "reinforce_baseline", "rloo", "dr_grpo"):
        assert not needs("--algo.advantage.estimator", estimator)
    assert not needs("--algo.advantage.estimator", "prpo", "--prpo.split", "uniform")
    assert not needs("--algo.advantage.estimator", "prpo", "--prpo.entropy_source", "actor")


def test_device_auto_is_cpu_only_without_any_detected_gpu():
    from prpo_openrlhf.trainer.cpu_device import resolve_device

    logical = {"CPU": 8.0, "GPU": 4.0, "memory": 1e9}  # `ray start --num-gpus 4` on a CPU machine
    assert resolve_device("auto", logical, cuda_available=False) == "cpu"
    assert resolve_device("auto", {**logical, "accelerator_type:H100": 1.0}, cuda_available=False) == "cuda"
    assert resolve_device("auto", logical, cuda_available=True) == "cuda"
    assert resolve_device("cpu", {"accelerator_type:H100": 1.0}, cuda_available=True) == "cpu"
    with pytest.raises(ValueError, match="--prpo.device"):
        resolve_device("tpu", logical)


@pytest.mark.parametrize("cpu_dtype, want", [("fp32", ("fp32", "fp32")), ("bf16", ("bf16", "bf16"))])
def test_cpu_dtype_sets_the_actors_and_the_prms_dtype(cpu_dtype, want):
    from prpo_openrlhf.trainer.cpu_device import prepare_cpu_args

    args = parse_args(BASE + ["--prm.model_name_or_path", "p", "--prpo.cpu_dtype", cpu_dtype])
    assert (args.ds.param_dtype, args.prm.dtype) == ("bf16", "bf16")  # the GPU defaults
    prepare_cpu_args(args)
    assert (args.ds.param_dtype, args.prm.dtype) == want
