"""The chapter 9 chat-template checker: the reference passes, a stub fails, and every mistake the
checker claims to diagnose is planted and named."""

import pytest
from checker_results import NOT_WRITTEN, all_passed, has

from gptcourse.chat import DEFAULT_SYSTEM, IM_END, IM_START, render_chat
from gptcourse.checks.chat import check_chat_template


# --- the chat template -----------------------------------------------------------------------------
def planted_render(system="default", end_nl="\n", role_nl="\n", role=str, prompt_role=None, prompt="asked",
                   prompt_nl="\n", start=IM_START, end=IM_END, strip=False, order=None,
                   default_gen=True, mutate=False, system_text=DEFAULT_SYSTEM, as_list=False):
    """A learner's render_chat with one mistake switched on by a keyword."""
    def render_chat_(messages, add_generation_prompt=default_gen):
        given = bool(messages) and messages[0]["role"] == "system"
        system_message = {"role": "system", "content": system_text}
        if mutate and not given:
            messages.insert(0, system_message)
            msgs = messages
        elif system == "always" or system == "default" and not given:
            msgs = [system_message, *messages]
        else:
            msgs = list(messages)
        if order is not None:
            msgs = order(msgs)
        parts = [f"{start}{role(m['role'])}{role_nl}{m['content'].strip() if strip else m['content']}{end}{end_nl}"
                 for m in msgs]
        if prompt == "always" or prompt == "asked" and add_generation_prompt:
            parts.append(f"{start}{(prompt_role or role)('assistant')}{prompt_nl}")
        return parts if as_list else "".join(parts)
    return render_chat_


def test_chat_template_reference_passes_every_line(capsys):
    assert all_passed(check_chat_template(render_chat), capsys)


def test_chat_template_planted_correct_version_passes():
    result = check_chat_template(planted_render())
    assert result.passed, result.problems


def test_chat_template_stub_fails():
    def render_chat(messages, add_generation_prompt=True):
        raise NotImplementedError

    result = check_chat_template(render_chat)
    assert not result.passed and has(result, NOT_WRITTEN)
    assert result.problems[0].startswith("render_chat(messages")


@pytest.mark.parametrize("kwargs, words", [
    (dict(system="never"), "there is no default system message"),
    (dict(system="always"), "a default system message is added although"),
    (dict(end_nl=""), "the newline after <|im_end|> is missing"),
    (dict(role_nl=""), "the newline between the role and the content is missing"),
    (dict(role_nl="", prompt_nl=""), "the newline between the role and the content is missing"),
    (dict(role=str.capitalize), "the role is capitalised"),
    (dict(role=str.capitalize, prompt_role=str), "the role is capitalised"),
    (dict(role=str.upper), "the letter case differs"),
    (dict(prompt="never"), "the generation prompt is missing"),
    (dict(prompt="always"), "the generation prompt is added although add_generation_prompt=False"),
    (dict(prompt_nl=""), "the generation prompt lacks its newline"),
    (dict(start="<im_start>"), "the marker <|im_start|> is missing or misspelled"),
    (dict(end="<|im_end>"), "the marker <|im_end|> is missing or misspelled"),
    (dict(end=IM_END + IM_END), "the marker <|im_end|> comes too often"),
    (dict(start="<|im_start|"), "write the special markers exactly"),
    (dict(order=lambda msgs: msgs[::-1]), "the messages are in reverse order"),
    (dict(order=lambda msgs: msgs[1:] + msgs[:1]), "the messages are in the wrong order"),
    (dict(strip=True), "the contents are stripped"),
    (dict(default_gen=False), "add_generation_prompt should default to True"),
    (dict(mutate=True), "changed the list it was given"),
    (dict(system_text="You are a helpful assistant."), "the default system message is not SmolLM2's"),
    (dict(as_list=True), "should return one string"),
])
def test_chat_template_mistakes_are_named(kwargs, words):
    result = check_chat_template(planted_render(**kwargs))
    assert not result.passed
    assert has(result, words), result.problems


def test_chat_template_renamed_keyword_is_named():
    def render_chat_renamed(messages, add_prompt=True):
        return render_chat(messages, add_prompt)

    result = check_chat_template(render_chat_renamed)
    assert has(result, "keep the signature render_chat(messages, add_generation_prompt=True)"), result.problems


@pytest.mark.parametrize("kwargs, shown", [
    (dict(end_nl=""), "(at character 97: got 'Face<|im_end|><|im_start|>us', expected "
                      "'Face<|im_end|>\\n<|im_start|>u')"),
    (dict(start="<im_start>"), "(at character 1: got '<im_start>syste', expected '<|im_start|>sys')"),
    (dict(prompt_nl=""), "got 'art|>assistant', expected 'art|>assistant\\n')"),
])
def test_chat_template_findings_show_the_first_difference(kwargs, shown):
    result = check_chat_template(planted_render(**kwargs))
    assert result.problems[0].endswith(shown), result.problems


def test_chat_template_a_mistake_is_explained_once():
    result = check_chat_template(planted_render(end_nl=""))
    assert len(result.problems) == 3 and sum("newline after <|im_end|>" in p for p in result.problems) == 1
    assert all("the same mistake (at character 46" in p for p in result.problems[1:]), result.problems


# --- every named mistake is told apart from the others on the checker's inputs -------------------
def test_every_named_template_mistake_gives_its_own_output():
    from gptcourse.checks.chat import CONVERSATION, ONE_QUESTION, TEMPLATE_MISTAKES, _render

    for messages, gen in [(ONE_QUESTION, True), (CONVERSATION, True), (CONVERSATION, False)]:
        want = render_chat(messages, gen)
        # a mistake that cannot show in this case gives the right text; the others all differ
        texts = {_render(messages, gen, **ways[0]) for ways in TEMPLATE_MISTAKES.values()} - {want}
        shown = [m for m, ways in TEMPLATE_MISTAKES.items() if _render(messages, gen, **ways[0]) != want]
        assert len(texts) == len(shown)
