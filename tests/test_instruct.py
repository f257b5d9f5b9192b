"""The instruction data: fetched and verified, validated, split by a fixed rule, formatted, scored."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from gptcourse.chat import DEFAULT_SYSTEM, IM_END, chat_token_ids, render_chat
from gptcourse.download import DownloadError, sha256_of
from gptcourse.instruct import (
    INSTRUCTION_DATA_PATH,
    INSTRUCTION_DATA_SHA256,
    INSTRUCTION_DATA_URL,
    InstructionDataError,
    alpaca_prompt,
    automatic_score,
    chat_messages,
    check_entries,
    checkable_answer,
    instruction_data_path,
    load_instruction_data,
    normalise,
    reply_is_correct,
    split_entries,
    tokenize_alpaca,
    tokenize_chat,
    tokenize_entries,
)
from gptcourse.tokenizers import CharTokenizer

ENTRY = {"instruction": "What is the plural form of 'mouse'?", "input": "",
         "output": "The plural form of 'mouse' is 'mice'."}
WITH_INPUT = {"instruction": "Edit the following sentence for grammar.",
              "input": "He go to the park every day.", "output": "He goes to the park every day."}


@pytest.fixture(scope="module")
def entries():
    return load_instruction_data()


# -- the file ---------------------------------------------------------------------------------

def test_the_file_is_raschkas_at_a_fixed_commit_and_verified(entries):
    assert INSTRUCTION_DATA_URL == ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/"
                                    "28c65cdfbc3338e2e040016eea4b7fdf556e4d57/ch07/"
                                    "01_main-chapter-code/instruction-data.json")
    path = instruction_data_path(download_ok=False)
    assert path.as_posix().endswith(INSTRUCTION_DATA_PATH)
    assert sha256_of(path) == INSTRUCTION_DATA_SHA256
    assert hashlib.sha256(path.read_bytes()).hexdigest() == INSTRUCTION_DATA_SHA256
    assert len(entries) == 1100
    assert sum(1 for e in entries if e["input"]) == 325


@pytest.mark.parametrize("damage", ["cut", "corrupt"])
def test_a_cut_or_corrupt_copy_is_refused_with_one_message(tmp_path, monkeypatch, damage):
    data = instruction_data_path(download_ok=False).read_bytes()
    copy = tmp_path / INSTRUCTION_DATA_PATH
    copy.parent.mkdir(parents=True)
    copy.write_bytes(data[: len(data) // 2] if damage == "cut" else data.replace(b"friend", b"fiend", 1))
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(DownloadError) as info:
        instruction_data_path(download_ok=False)
    message = str(info.value)
    assert "exists but its sha256 is" in message and INSTRUCTION_DATA_SHA256 in message
    assert "python -m gptcourse data" in message and INSTRUCTION_DATA_URL in message
    assert info.value.__cause__ is None and info.value.__context__ is None  # one message, no chain


def test_a_missing_copy_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(DownloadError, match="instruction-data.json is missing"):
        instruction_data_path(download_ok=False)


def test_a_cut_file_given_by_path_is_refused(tmp_path):
    data = instruction_data_path(download_ok=False).read_bytes()
    (tmp_path / "cut.json").write_bytes(data[:5000])
    with pytest.raises(InstructionDataError, match="not a valid JSON file.*cut short or damaged"):
        load_instruction_data(tmp_path / "cut.json")
    with pytest.raises(InstructionDataError, match="cannot read"):
        load_instruction_data(tmp_path / "missing.json")


@pytest.mark.parametrize("entry, message", [
    ({"instruction": "Hi", "output": "Hello"}, r"\[0\] must be a dict with exactly the keys"),
    ({**ENTRY, "extra": 1}, r"\[0\] must be a dict with exactly the keys .* got \['extra'"),
    ({**ENTRY, "input": None}, r"\[0\]\['input'\] must be a str, got NoneType"),
    ({**ENTRY, "output": "  "}, r"\[0\]\['output'\] is empty"),
    ("just text", r"\[0\] must be a dict .* got str"),
])
def test_malformed_entries_are_named(tmp_path, entry, message):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([entry]))
    with pytest.raises(InstructionDataError, match=r"data\.json" + message):
        load_instruction_data(path)


def test_the_file_must_hold_a_list_with_entries():
    with pytest.raises(InstructionDataError, match="must be a list"):
        check_entries({"instruction": "a", "input": "", "output": "b"})
    with pytest.raises(InstructionDataError, match="is empty"):
        check_entries([])


# -- the split --------------------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_follows_its_rule(entries):
    splits = split_entries(entries)
    assert [len(s) for s in splits] == [910, 61, 129]
    ids = [{id(e) for e in s} for s in splits]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == len(entries)
    # The rule, computed here on its own: the first 8 bytes of sha256(instruction \n input).
    def position(e):
        key = (e["instruction"] + "\n" + e["input"]).encode("utf-8")
        return int(hashlib.sha256(key).hexdigest()[:16], 16) / 16**16
    assert splits.test == [e for e in entries if position(e) < 0.10]
    assert splits.val == [e for e in entries if 0.10 <= position(e) < 0.15]
    # The file's order does not matter, and each split keeps the file's order.
    shuffled = entries[:]
    random.Random(0).shuffle(shuffled)
    again = split_entries(shuffled)
    for ours, theirs in zip(splits, again):
        assert sorted(map(json.dumps, ours)) == sorted(map(json.dumps, theirs))


@pytest.mark.parametrize("hold_out_checkable", [False, True])
def test_a_repeated_prompt_never_lands_in_two_splits(entries, hold_out_checkable):
    splits = split_entries(entries, hold_out_checkable=hold_out_checkable)
    where = {}
    for name, split in zip(splits._fields, splits):
        for e in split:
            where.setdefault((e["instruction"], e["input"]), set()).add(name)
    assert all(len(names) == 1 for names in where.values())
    assert sum(1 for e in entries if e["instruction"] == "What is the capital of Germany?") == 2


def test_hold_out_checkable_sends_every_checkable_entry_to_test(entries):
    splits = split_entries(entries, hold_out_checkable=True)
    checkable = [e for e in entries if checkable_answer(e) is not None]
    assert len(checkable) == 131
    assert all(checkable_answer(e) is None for e in splits.train + splits.val)
    assert sum(checkable_answer(e) is not None for e in splits.test) == 131
    assert sum(checkable_answer(e) is not None for e in split_entries(entries).test) == 13


@pytest.mark.parametrize("kwargs, message", [
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "must leave entries to train on"),
    ({"val_fraction": -0.1}, "val_fraction must be a number in"),
    ({"test_fraction": 1.0}, "test_fraction must be a number in"),
])
def test_bad_split_fractions_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_entries([ENTRY], **kwargs)
    with pytest.raises(TypeError, match="hold_out_checkable must be True or False"):
        split_entries([ENTRY], hold_out_checkable=1)


# -- prompt formats and tokens ----------------------------------------------------------------

def test_alpaca_prompt_layout():
    assert alpaca_prompt(WITH_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nEdit the following sentence for grammar."
        "\n\n### Input:\nHe go to the park every day.\n\n### Response:\n")
    assert "### Input" not in alpaca_prompt(ENTRY)


def test_chat_messages_use_smollm2s_template():
    assert chat_messages(WITH_INPUT) == [{"role": "user", "content":
                                          "Edit the following sentence for grammar.\n\n"
                                          "He go to the park every day."}]
    assert render_chat(chat_messages(ENTRY)).startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}")
    assert chat_messages(ENTRY, system="Be brief.")[0] == {"role": "system", "content": "Be brief."}


def test_every_entry_formats_and_tokenizes_with_gpt2(entries):
    gpt2 = pytest.importorskip("gptcourse.tokenizers").gpt2_tokenizer()
    pairs = tokenize_entries(entries, tokenize_alpaca, gpt2)
    for entry, (prompt, response) in zip(entries, pairs):
        assert gpt2.decode(prompt) == alpaca_prompt(entry)
        assert response[-1] == 50256 and response.count(50256) == 1  # the end token, once
        assert gpt2.decode(response[:-1]) == entry["output"]


def test_every_entry_tokenizes_in_smollm2s_chat_template(entries):
    smollm2 = pytest.importorskip("gptcourse.smollm2")
    try:
        tokenizer = smollm2.smollm2_tokenizer()
    except smollm2.ModelUnavailableError as exc:
        pytest.skip(str(exc))
    end = tokenizer.special_tokens[IM_END]
    for entry in entries:
        prompt, response = tokenize_chat(entry, tokenizer)
        # The prompt is what a chat sends before the reply; the text round-trips exactly.
        assert prompt == chat_token_ids(chat_messages(entry), tokenizer)
        assert tokenizer.decode(prompt + response) == (render_chat(chat_messages(entry))
                                                       + entry["output"] + IM_END)
        assert response[-1] == end and response.count(end) == 1


def test_a_control_token_typed_in_the_data_stays_text():
    smollm2 = pytest.importorskip("gptcourse.smollm2")
    try:
        tokenizer = smollm2.smollm2_tokenizer()
    except smollm2.ModelUnavailableError as exc:
        pytest.skip(str(exc))
    sneaky = {**ENTRY, "output": "mice<|im_end|>"}
    _, response = tokenize_chat(sneaky, tokenizer)
    assert response.count(tokenizer.special_tokens[IM_END]) == 1


def test_character_tokenizer_needs_an_end_id():
    tokenizer = CharTokenizer(alpaca_prompt(ENTRY) + ENTRY["output"])
    with pytest.raises(ValueError, match="no special token '<\\|endoftext\\|>': pass end_id="):
        tokenize_alpaca(ENTRY, tokenizer)
    prompt, response = tokenize_alpaca(ENTRY, tokenizer, end_id=0)
    assert tokenizer.decode(prompt) == alpaca_prompt(ENTRY) and response[-1] == 0
    with pytest.raises(TypeError, match="end_id must be"):
        tokenize_alpaca(ENTRY, tokenizer, end_id="0")
    with pytest.raises(TypeError, match="tokenize must be a function"):
        tokenize_entries([ENTRY], "alpaca", tokenizer)


# -- the automatic score ----------------------------------------------------------------------

@pytest.mark.parametrize("question, output, answer", [
    ("What is the plural form of 'mouse'?", "The plural form of 'mouse' is 'mice'.", "mice"),
    ("Convert 45 kilometers to meters.", "45 kilometers is 45000 meters.", "45000 meters"),
    ("Convert 2,000 milligrams to grams.", "2,000 milligrams is equal to 2 grams.", "2 grams"),
    ("What is the capital of the United States?",
     "The capital of the United States is Washington, D.C.", "washington d c"),
    ("What is the chemical symbol for mercury?", "Hg.", "hg"),
])
def test_checkable_answers_are_read_from_the_output(question, output, answer):
    assert checkable_answer({"instruction": question, "input": "", "output": output}) == answer


@pytest.mark.parametrize("entry", [
    WITH_INPUT,                                                        # not a closed question
    {**ENTRY, "input": "mouse"},                                       # has an input
    {"instruction": "Convert 45 kilograms to pounds.", "input": "",
     "output": "45 kilograms is approximately 99.21 pounds."},         # a hedged answer
    {"instruction": "What is the opposite of 'generous'?", "input": "",
     "output": "The opposite of 'generous' is 'stingy' or 'miserly'."},  # two answers
])
def test_entries_without_one_checkable_answer_are_left_out(entry):
    assert checkable_answer(entry) is None


def test_the_rule_picks_closed_questions_only(entries):
    picked = [e for e in entries if checkable_answer(e) is not None]
    assert all(not e["input"] for e in picked)
    assert all(e["instruction"].startswith(("What is the", "Convert")) for e in picked)
    assert all(len(checkable_answer(e).split()) <= 3 for e in picked)
    # Every reference output passes its own check; an unrelated one fails.
    assert all(reply_is_correct(e["output"], checkable_answer(e)) for e in picked)
    assert not reply_is_correct("I do not know.", "mice")


def test_normalised_match():
    assert normalise("  The Capital is BRASÍLIA!! ") == "the capital is brasilia"
    assert normalise("It is 2,000 m, or 0.5 km.") == "it is 2000 m or 0.5 km"
    assert reply_is_correct("Mice.", "mice") and reply_is_correct("Mice.", "mice", exact=True)
    assert reply_is_correct("The plural of mouse is mice.", "mice")
    assert not reply_is_correct("The plural of mouse is mice.", "mice", exact=True)
    assert not reply_is_correct("Mouses", "mice")
    assert not reply_is_correct("45000", "4500")  # whole numbers only, not a part of one
    with pytest.raises(TypeError, match="reply and answer must be strings"):
        reply_is_correct(None, "mice")


def test_automatic_score_counts_checkable_entries_only():
    entries = [ENTRY, WITH_INPUT, {"instruction": "What is the capital of Japan?", "input": "",
                                   "output": "The capital of Japan is Tokyo."}]
    score = automatic_score(entries, ["mice, I think", "anything", "Kyoto"])
    assert score == {"checked": 2, "correct": 1, "score": 0.5}
    with pytest.raises(ValueError, match="one reply per entry \\(3\\), got 2"):
        automatic_score(entries, ["a", "b"])
