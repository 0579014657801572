"""The outcome grader as OpenRLHF's single-turn executor calls it: ``query`` is the decoded
prompt + response with special tokens kept (``skip_special_tokens=False``), so a finished
response ends in the EOS text and the prompt's chat-template tokens are in it too."""
from prpo_openrlhf.trainer.outcome_reward import reward_func

PROMPT = ("<|im_start|>system\nPut your final answer within \\boxed{}.<|im_end|>\n"
          "<|im_start|>user\nCompute (3+4)*2.<|im_end|>\n<|im_start|>assistant\n")


def test_the_eos_text_after_the_answer_changes_no_grade():
    responses = ["3+4=7\n7*2=14\n\\boxed{14}<|im_end|>", "3+4=7\n7*2=14\n\\boxed{14}",
                 "3+4=7\n7*2=15\n\\boxed{15}<|im_end|>", "\\boxed{14}<|im_end|><|endoftext|>"]
    out = reward_func([PROMPT + r for r in responses], [PROMPT] * 4, ["14"] * 4)
    assert out["rewards"].tolist() == [1.0, 1.0, -1.0, 1.0]


def test_the_prompts_own_boxed_is_never_graded():
    """A prompt that shows an answer in a box (a few-shot example) does not grade a response
    that has none."""
    prompt = PROMPT.replace("within \\boxed{}", "within a box, e.g. \\boxed{14}")
    assert "\\boxed{14}" in prompt
    out = reward_func([prompt + "3+4=7<|im_end|>", prompt + "\\boxed{14}<|im_end|>"], [prompt] * 2, ["14"] * 2)
    assert out["rewards"].tolist() == [-1.0, 1.0]


def test_no_answer_is_right_against_an_empty_or_non_finite_label():
    """A label that is null, NaN, inf, empty or blank can never be matched: str(label) would
    make ``\\boxed{nan}`` right against NaN and ``\\boxed{None}`` right against null."""
    labels = [float("nan"), None, "", "  \n", float("inf"), float("-inf"), "nan", "14"]
    responses = ["\\boxed{nan}", "\\boxed{None}", "\\boxed{}", "\\boxed{ }", "\\boxed{\\infty}",
                 "\\boxed{-\\infty}", "\\boxed{nan}", "\\boxed{14}"]
    out = reward_func([PROMPT + r + "<|im_end|>" for r in responses], [PROMPT] * len(labels), labels)
    # The string "nan" is a label like any other (prpo-eval accepts it too); only the last two count.
    assert out["rewards"].tolist() == [-1.0] * 6 + [1.0, 1.0]
