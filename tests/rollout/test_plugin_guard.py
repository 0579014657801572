"""register(): version guard, all-or-nothing patching, idempotence, refusals."""
import logging
from types import SimpleNamespace as NS

import pytest

from prpo_openrlhf.rollout import _vllm_engine_hooks, vllm_entropy


@pytest.mark.parametrize("version", ["0.29.0", "0.29.0+cpu", "0.29.0+cu128"])
def test_supported_versions(version):
    assert vllm_entropy.version_problem(version) is None


@pytest.mark.parametrize("version", ["0.28.2", "0.29.1", "0.30.0", "0.29.0rc1", "0.29.0.post1", "junk"])
def test_other_versions_are_refused_with_the_fallback(version):
    message = vllm_entropy.version_problem(version)
    assert "0.29.0" in message and "--prpo.entropy_source actor" in message and version in message


def _wrapped(targets):
    import importlib

    out = []
    for module, cls, method, _ in targets:
        fn = getattr(importlib.import_module(module), cls).__dict__[method]
        if hasattr(fn, "__prpo_entropy_original__"):
            out.append(f"{cls}.{method}")
    return out


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_register_refuses_cleanly_and_installs_once(monkeypatch):
    """Runs in this process: the plugin is taken out first and put back at the end."""
    import vllm

    real_targets = vllm_entropy.all_targets
    records = _Records()
    logging.getLogger("vllm.prpo_entropy").addHandler(records)
    vllm_entropy.uninstall()
    try:
        assert _wrapped(real_targets()) == []
        monkeypatch.setattr(vllm, "__version__", "0.30.0")
        vllm_entropy.register()
        assert not vllm_entropy.is_installed() and _wrapped(real_targets()) == []
        assert "0.30.0" in vllm_entropy.status()
        assert any("supports vLLM 0.29.0 only" in m for m in records.messages)
        monkeypatch.undo()

        bad = ("vllm.v1.sample.sampler", "Sampler", "no_such_method", lambda original: original)
        monkeypatch.setattr(vllm_entropy, "all_targets", lambda: real_targets() + [bad])
        vllm_entropy.register()  # logs and returns, never raises
        assert not vllm_entropy.is_installed() and _wrapped(real_targets()) == []
        assert "no_such_method" in vllm_entropy.status()
        monkeypatch.undo()

        vllm_entropy.register()
        vllm_entropy.register()
        assert vllm_entropy.is_installed()
        assert len(_wrapped(real_targets())) == len(real_targets())
        vllm_entropy.uninstall()
        assert _wrapped(real_targets()) == []
    finally:
        monkeypatch.undo()
        vllm_entropy.install()
        logging.getLogger("vllm.prpo_entropy").removeHandler(records)
    assert len(_wrapped(real_targets())) == len(real_targets())


def test_apply_rolls_back_when_a_patch_fails():
    class Meta(type):
        def __setattr__(cls, name, value):
            if name == "b":
                raise TypeError("read-only")
            super().__setattr__(name, value)

    class Target(metaclass=Meta):
        def a(self):
            return "a"

        def b(self):
            return "b"

    original_a = Target.__dict__["a"]
    resolved = [(Target, "a", original_a, lambda self: "patched"),
                (Target, "b", Target.__dict__["b"], lambda self: "patched")]
    with pytest.raises(TypeError):
        vllm_entropy._apply(resolved)
    assert Target.__dict__["a"] is original_a and Target().a() == "a"


def test_resolve_fails_before_patching_on_a_missing_method():
    targets = [("vllm.v1.sample.sampler", "Sampler", "sample", lambda f: f),
               ("vllm.v1.sample.sampler", "Sampler", "no_such_method", lambda f: f)]
    with pytest.raises(AttributeError, match="no_such_method"):
        vllm_entropy._resolve(targets)


@pytest.mark.parametrize("config,reason", [
    (NS(speculative_config=object(), parallel_config=NS(enable_batch_sharded_sampling=False)),
     "speculative decoding"),
    (NS(speculative_config=None, parallel_config=NS(enable_batch_sharded_sampling=True)),
     "batch-sharded sampling"),
    (NS(speculative_config=None, parallel_config=NS(enable_batch_sharded_sampling=None)), None),
])
def test_frontend_refuses_what_it_cannot_honour(config, reason):
    from vllm import SamplingParams

    validate = _vllm_engine_hooks.input_processor_validate_params(lambda self, params, *a: None)
    processor = NS(vllm_config=config)
    validate(processor, SamplingParams(), ())  # no opt-in: never refused
    asked = SamplingParams(extra_args={"return_entropy": True})
    if reason is None:
        validate(processor, asked, ())
    else:
        with pytest.raises(ValueError, match=reason):
            validate(processor, asked, ())


def test_entropy_source_start_up_check():
    from prpo_openrlhf.rollout.samples_generator import ENTROPY_SOURCES, check_entropy_source

    assert ENTROPY_SOURCES == ("vllm", "actor")
    check_entropy_source("vllm")  # the installed vLLM is the supported one
    check_entropy_source("actor", vllm_version="0.30.0")
    with pytest.raises(ValueError, match="--prpo.entropy_source actor"):
        check_entropy_source("vllm", vllm_version="0.30.0")
    with pytest.raises(ValueError, match="choose one of"):
        check_entropy_source("hf")
