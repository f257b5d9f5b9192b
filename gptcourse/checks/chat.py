"""Checker for chapter 9: the chat template, render_chat(messages, add_generation_prompt=True)."""

from __future__ import annotations

import copy

from ..chat import DEFAULT_SYSTEM, IM_END, IM_START
from ..chat import render_chat as reference_render_chat
from . import Check, learner_name

SYSTEM = {"role": "system", "content": DEFAULT_SYSTEM}
ONE_QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
CONVERSATION = [
    {"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": "Where is the treasure? "},
    {"role": "assistant", "content": "Arr!\nFollow the map."},
    {"role": "user", "content": "Which map?"},
]
CHAT_ERRORS = {
    "unexpected keyword argument 'add_generation_prompt'": "keep the signature "
        "render_chat(messages, add_generation_prompt=True)",
}
MESSAGE = "each message is '<|im_start|>{role}\\n{content}<|im_end|>\\n'"


def _render(messages, gen: bool = True, *, system: str = "default", end_nl: str = "\n",
            role_nl: str = "\n", role=str, prompt: str = "asked", prompt_nl: str = "\n",
            prompt_role=None, strip: bool = False, order=None) -> str:
    """render_chat with one deliberate change, to recognise a learner's mistake."""
    given = bool(messages) and messages[0]["role"] == "system"
    msgs = [SYSTEM, *messages] if system == "always" or system == "default" and not given else list(messages)
    if order is not None:
        msgs = order(msgs)
    text = "".join(f"{IM_START}{role(m['role'])}{role_nl}{m['content'].strip() if strip else m['content']}"
                   f"{IM_END}{end_nl}" for m in msgs)
    if prompt == "always" or prompt == "asked" and gen:
        text += f"{IM_START}{(prompt_role or role)('assistant')}{prompt_nl}"
    return text


# Each mistake, and the ways of writing it (the generation prompt may be written apart).
TEMPLATE_MISTAKES = {
    "there is no default system message: when messages[0] is not a system message, SmolLM2's "
    "template puts {'role': 'system', 'content': DEFAULT_SYSTEM} first": [dict(system="never")],
    "a default system message is added although the conversation starts with its own: add it only "
    "when messages[0]['role'] != 'system'": [dict(system="always")],
    "the newline after <|im_end|> is missing: " + MESSAGE: [dict(end_nl="")],
    "the newline between the role and the content is missing: " + MESSAGE:
        [dict(role_nl=""), dict(role_nl="", prompt_nl="")],
    "the role is capitalised: SmolLM2's roles are lower case ('user', not 'User')":
        [dict(role=str.capitalize), dict(role=str.capitalize, prompt_role=str)],
    "the generation prompt is missing: with add_generation_prompt=True the text ends with "
    "'<|im_start|>assistant\\n', where the model writes its reply": [dict(prompt="never")],
    "the generation prompt is added although add_generation_prompt=False: add "
    "'<|im_start|>assistant\\n' only when it is True": [dict(prompt="always")],
    "the generation prompt lacks its newline: it is '<|im_start|>assistant\\n' (the reply starts on "
    "the next line)": [dict(prompt_nl="")],
    "the contents are stripped: keep each message's text exactly as it is": [dict(strip=True)],
    "the messages are in reverse order: render them as they come in the list":
        [dict(order=lambda msgs: msgs[::-1])],
}


def _first_difference(got: str, want: str, width: int = 14) -> str:
    """Where two strings first differ, shown short: 'at character i: got '...', expected '...''."""
    i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    start = max(0, i - width)
    return f"at character {i}: got {got[start:i + width]!r}, expected {want[start:i + width]!r}"


def _template_diagnosis(got: str, want: str, messages, gen: bool) -> str:
    """The named mistake behind a wrong rendering, else what the markers or the order show."""
    for mistake, ways in TEMPLATE_MISTAKES.items():
        if any(got == _render(messages, gen, **kw) for kw in ways):
            return mistake
    for marker in (IM_START, IM_END):
        if got.count(marker) != want.count(marker):
            how = "is missing or misspelled" if got.count(marker) < want.count(marker) else "comes too often"
            return (f"the marker {marker} {how}: write the special markers exactly, '<|im_start|>' "
                    f"and '<|im_end|>' (a bar on each side), once per message")
    if sorted(got.split(IM_START)) == sorted(want.split(IM_START)):
        return "the messages are in the wrong order: render them as they come in the list"
    if got.lower() == want.lower():
        return "the letter case differs: roles and markers are lower case, as the template writes them"
    if got.startswith(f"{IM_START}system\n") and not want.startswith(got.split(IM_END)[0]) \
            and (not messages or messages[0]["role"] != "system"):
        return "the default system message is not SmolLM2's: use DEFAULT_SYSTEM from gptcourse.chat"
    return f"the text differs from SmolLM2's template ({MESSAGE})"


def check_chat_template(render_chat) -> Check:
    """Check a learner's render_chat(messages, add_generation_prompt=True) -> str."""
    name = learner_name(render_chat, "render_chat")
    cases = [("one user message, no system message", ONE_QUESTION, None),
             ("a conversation with its own system message", CONVERSATION, True),
             ("the conversation with add_generation_prompt=False", CONVERSATION, False)]
    with Check("chat template", seed=0, known=CHAT_ERRORS) as check:
        named: set[str] = set()  # a mistake is explained once; later cases only show where
        for label, messages, gen in cases:
            given = copy.deepcopy(messages)
            args = {} if gen is None else {"add_generation_prompt": gen}
            shown = f"{name}(messages{', add_generation_prompt=' + str(gen) if args else ''})"
            got = check.call(shown, render_chat, given, **args)
            if given != messages:
                check.fail(f"{shown} changed the list it was given (insert or append on messages): "
                           f"build a new list, for example [system, *messages]")
            if not isinstance(got, str):
                check.stop(f"{shown} should return one string, the whole text; got {type(got).__name__}")
            want = reference_render_chat(messages, gen is not False)
            if got == want:
                check.ok(f"{label}: the text equals SmolLM2's template")
                continue
            diagnosis = _template_diagnosis(got, want, messages, gen is not False)
            if gen is None and got == _render(messages, prompt="never") and check.call(
                    shown, render_chat, copy.deepcopy(messages), add_generation_prompt=True) == want:
                diagnosis = ("add_generation_prompt should default to True: "
                             f"def {name}(messages, add_generation_prompt=True)")
            said = diagnosis in named
            named.add(diagnosis)
            check.fail(f"{label}: {'the same mistake' if said else diagnosis} ({_first_difference(got, want)})")
    return check
