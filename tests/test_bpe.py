"""Byte-level BPE: merging, training, encode/decode, GPT-2's encoder equal to tiktoken's,
the Korean corpus and reading files in other encodings."""

import ast
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import regex

from gptcourse.bpe import (
    END_OF_TEXT,
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    best_pair,
    merge,
    pair_counts,
    split_text,
    train_bpe,
)
from gptcourse.data import (
    KOREAN_CONSTITUTION_PATH,
    KOREAN_CONSTITUTION_SHA256,
    KOREAN_CONSTITUTION_URL,
    korean_constitution_path,
    load_text,
)
from gptcourse.download import DownloadError, sha256_of
from gptcourse.gpt2_bpe import gpt2_bpe, gpt2_ranks, merges_from_ranks
from gptcourse.tokenizers import gpt2_tokenizer

HARD_STRINGS = [
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "two  spaces\tand a tab",
    "\n",
    "\n\nnewlines\n\n\nin a row\r\n",
    "line one\n  indented line two\n",
    "digits 0 12 345 6789 3.14159 1,000,000 2026-11-28",
    "contractions: I'm, you're, he's, we'll, they've, I'd, don't, can't, it's",
    "SHOUTING: I'M, YOU'RE, DON'T",
    "quotes: 'single' \"double\" ''",
    "emoji: 👍🏽 🇰🇷 👨‍👩‍👧 ❤️",
    "대한민국헌법 제1조 ① 대한민국은 민주공화국이다.",
    "mixed: hello세계 Привет мир こんにちは 你好 مرحبا",
    "café naïve Ünïcödé ﬁ ½",
    "punctuation!!! ??? ... --- ### $$$ (a) [b] {c}",
    "a<|endoftext|>b is plain text in encode_ordinary",
    "\u200b zero width \u00a0 no-break \u3000 ideographic space",
    "x" * 300,
]


def naive_train(text: str, vocab_size: int, pattern) -> dict:
    """Training as the notebook first writes it: recount every pair at every step."""
    chunks = [list(piece.encode("utf-8")) for piece in split_text(text, pattern)]
    merges = {}
    for new_id in range(256, vocab_size):
        counts = {}
        for ids in chunks:
            pair_counts(ids, counts)
        if not counts:
            break
        pair = best_pair(counts)
        merges[pair] = new_id
        chunks = [merge(ids, pair, new_id) for ids in chunks]
    return merges


def random_text(rng: random.Random, n: int) -> str:
    """Random code points from every plane, except surrogates (UTF-8 cannot store them)."""
    chars = []
    while len(chars) < n:
        c = rng.choice([rng.randrange(0x80), rng.randrange(0x800), rng.randrange(0x10000),
                        rng.randrange(0x110000), 0xAC00 + rng.randrange(11172)])
        if not 0xD800 <= c <= 0xDFFF:
            chars.append(chr(c))
    return "".join(chars)


# --- the two steps: counting and merging ---------------------------------------------------------
def test_pair_counts_overlapping_pairs():
    assert pair_counts([1, 1, 1]) == {(1, 1): 2}
    assert pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert pair_counts([7]) == {} and pair_counts([]) == {}
    counts = pair_counts([1, 2], weight=5)
    assert pair_counts([1, 2, 1], counts) == {(1, 2): 6, (2, 1): 1}


def test_merge_is_left_to_right_without_overlap():
    a = 97
    assert merge([a, a, a], (a, a), 256) == [256, a]
    assert merge([a, a, a, a], (a, a), 256) == [256, 256]
    assert merge([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge([1, 2], (2, 1), 9) == [1, 2]
    assert merge([], (1, 2), 9) == []


def test_ties_go_to_the_smallest_pair():
    assert best_pair({(5, 6): 3, (2, 9): 3, (1, 1): 2}) == (2, 9)


# --- training ----------------------------------------------------------------------------------------
def test_first_merge_of_a_small_text():
    tok = train_bpe("aaabdaaabac", 259, pattern=None, progress=False)
    # (a, a) occurs 4 times. In Z a b d Z a b a c, (a, b) and (Z, a) tie at 2: the smaller
    # pair (97, 98) wins. Then Z X d Z X a c holds (Z, X) twice.
    assert list(tok.merges.items()) == [((97, 97), 256), ((97, 98), 257), ((256, 257), 258)]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.vocab[258] == b"aaab"


@pytest.mark.parametrize("pattern", [None, GPT2_SPLIT_PATTERN], ids=["whole text", "gpt2 pieces"])
def test_fast_training_equals_recounting_every_step(pattern):
    text = load_text()[:20_000]
    tok = train_bpe(text, 256 + 120, pattern=pattern, progress=False)
    assert tok.merges == naive_train(text, 256 + 120, pattern)
    assert list(tok.merges.values()) == list(range(256, 376))


def test_training_is_deterministic():
    text = load_text("korean-constitution")
    first = train_bpe(text, 400, progress=False)
    second = train_bpe(text, 400, progress=False)
    assert list(first.merges.items()) == list(second.merges.items())
    assert first.encode(text) == second.encode(text)


def test_training_does_not_depend_on_hash_seeds():
    """Python randomises str hashes per process: the merges must not depend on dict or set order."""
    path = korean_constitution_path(download_ok=False)
    code = ("import sys; from gptcourse.bpe import train_bpe; "
            "text = open(sys.argv[1], encoding='utf-8').read(); "
            "print(list(train_bpe(text, 300, progress=False).merges.items()))")
    runs = [subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert runs[0] == runs[1] and len(ast.literal_eval(runs[0])) == 300 - 256


def test_first_merges_on_tiny_shakespeare():
    tok = train_bpe(load_text(), 256 + 5, progress=False)
    assert [tok.vocab[i] for i in range(256, 261)] == [b" t", b"he", b" a", b"ou", b" s"]


def test_training_stops_when_nothing_is_left_to_merge():
    tok = train_bpe("ab ab", 1000, progress=False)
    assert tok.merges == {(97, 98): 256, (32, 256): 257}
    assert tok.encode("ab ab") == [256, 257]


def test_special_tokens_after_the_merges():
    tok = train_bpe("hello hello world", 260, special_tokens=[END_OF_TEXT], progress=False)
    assert tok.special_tokens == {END_OF_TEXT: 260}
    assert tok.n_vocab == 261
    ids = tok.encode("hello<|endoftext|>world", allowed_special={END_OF_TEXT})
    assert 260 in ids and tok.decode(ids) == "hello<|endoftext|>world"
    assert tok.encode("a<|endoftext|>", allowed_special="all")[-1] == 260
    plain = tok.encode_ordinary("<|endoftext|>")
    assert 260 not in plain and tok.decode(plain) == END_OF_TEXT
    with pytest.raises(ValueError, match="allowed_special=.*encode_ordinary"):
        tok.encode("hi <|endoftext|>")
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("hi", allowed_special={"<|fim|>"})
    with pytest.raises(TypeError, match=r"allowed_special must be a set.*\{'<\|endoftext\|>'\}"):
        tok.encode("hi", allowed_special=END_OF_TEXT)


@pytest.mark.parametrize("bad, error, words", [
    (dict(text=b"bytes", vocab_size=300), TypeError, "text must be a str"),
    (dict(text="abc", vocab_size=100), ValueError, "vocab_size must be >= 256"),
    (dict(text="abc", vocab_size=300.0), TypeError, "vocab_size must be an int"),
])
def test_training_rejects_bad_input(bad, error, words):
    with pytest.raises(error, match=words):
        train_bpe(progress=False, **bad)


def test_encode_and_decode_reject_bad_input():
    tok = BPETokenizer({})
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(b"abc")
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode("a\ud800b")
    with pytest.raises(ValueError, match="not ids of this tokenizer"):
        tok.decode([1, 256])
    with pytest.raises(ValueError, match="order they were learned"):
        BPETokenizer({(256, 1): 257})


# --- decode is the inverse of encode -----------------------------------------------------------------
def test_decode_encode_round_trip_on_random_unicode():
    rng = random.Random(0)
    trained = train_bpe(load_text("korean-constitution") + load_text()[:20_000], 600, progress=False)
    for tok in (trained, gpt2_bpe()):
        for n in (1, 2, 5, 50, 500):
            for _ in range(20):
                text = random_text(rng, n)
                assert tok.decode(tok.encode(text)) == text


def test_decode_joins_bytes_before_utf8():
    tok = BPETokenizer({})
    ids = tok.encode("한")  # one syllable, three byte tokens
    assert ids == [0xED, 0x95, 0x9C]
    assert tok.decode(ids) == "한"
    # A token cut out of the middle of a character is not text: GPT-2 shows "\ufffd" for it.
    assert tok.decode(ids[:2]) == "\ufffd"
    assert tok.decode_bytes(ids[:2]) == b"\xed\x95"


# --- GPT-2's encoder, rebuilt -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiktoken_gpt2():
    return gpt2_tokenizer()


def test_gpt2_merges_rebuilt_from_ranks(tiktoken_gpt2):
    tok = gpt2_bpe()
    assert len(tok.merges) == 50_000 and tok.n_vocab == 50_257 == tiktoken_gpt2.n_vocab
    assert tok.special_tokens == {END_OF_TEXT: 50_256}
    # every token's bytes are what tiktoken says they are
    assert all(tok.vocab[i] == tiktoken_gpt2.decode_single_token_bytes(i) for i in range(50_257))
    assert merges_from_ranks({bytes([b]): b for b in range(256)} | {b"ab": 256, b"abc": 257})[0] \
        == {(97, 98): 256, (256, 99): 257}
    ranks = gpt2_ranks()  # the ordinary tokens only: <|endoftext|> is not a merge
    assert len(ranks) == 50_256 and ranks[b" t"] == 256 and b"<|endoftext|>" not in ranks


def test_whole_tiny_shakespeare_equals_tiktoken(tiktoken_gpt2):
    text = load_text()
    ours = gpt2_bpe().encode_ordinary(text)
    assert len(ours) == 338_025
    assert ours == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_bpe().decode(ours) == text


@pytest.mark.parametrize("text", HARD_STRINGS, ids=range(len(HARD_STRINGS)))
def test_hard_strings_equal_tiktoken(tiktoken_gpt2, text):
    ours = gpt2_bpe()
    assert ours.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert ours.decode(ours.encode_ordinary(text)) == text
    # tiktoken writes GPT-2's pattern with possessive quantifiers; it splits the same way
    assert split_text(text) == regex.findall(tiktoken_gpt2._pat_str, text)


def test_special_token_equals_tiktoken(tiktoken_gpt2):
    text = "The end.<|endoftext|>A new start"
    assert gpt2_bpe().encode(text, allowed_special={END_OF_TEXT}) == \
        tiktoken_gpt2.encode(text, allowed_special={END_OF_TEXT})


def test_decoding_parts_of_a_character_equals_tiktoken(tiktoken_gpt2):
    ids = tiktoken_gpt2.encode_ordinary("헌법 👍")
    for end in range(len(ids) + 1):
        assert gpt2_bpe().decode(ids[:end]) == tiktoken_gpt2.decode(ids[:end])


# --- the Korean corpus -------------------------------------------------------------------------------
def test_korean_corpus_is_verified():
    path = korean_constitution_path(download_ok=False)
    assert sha256_of(path) == KOREAN_CONSTITUTION_SHA256
    assert len(path.read_bytes()) == 45_859
    assert len(path.read_bytes().decode("utf-8")) == 19_240
    text = load_text("korean-constitution")
    assert text.startswith("대한민국헌법") and "\r" not in text  # Windows line ends read as "\n"


def test_korean_download_checks_the_sha256(tmp_path, monkeypatch):
    """A download with the wrong bytes is refused and leaves nothing; the right bytes are kept."""
    real = korean_constitution_path(download_ok=False).read_bytes()
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(tmp_path / "data"))
    served = tmp_path / "constitution.txt"
    served.write_bytes("대한민국헌법 (not the real file)".encode())
    monkeypatch.setattr("gptcourse.data.KOREAN_CONSTITUTION_URL", served.as_uri())
    with pytest.raises(DownloadError, match=KOREAN_CONSTITUTION_SHA256):
        load_text("korean-constitution")
    assert list((tmp_path / "data").rglob("*.txt*")) == []
    served.write_bytes(real)
    assert load_text("korean-constitution").startswith("대한민국헌법")
    assert sha256_of(tmp_path / "data" / KOREAN_CONSTITUTION_PATH) == KOREAN_CONSTITUTION_SHA256


def test_korean_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTCOURSE_DATA_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError) as info:
        load_text("korean-constitution")
    message = str(info.value)
    assert "korean/constitution.txt is missing" in message
    assert f"Looked in the data folder {tmp_path}" in message
    assert KOREAN_CONSTITUTION_URL in message and "python -m gptcourse data" in message
    assert "no network in this test" in message


# --- other encodings -----------------------------------------------------------------------------------
def test_cp949_file_gets_a_hint_and_reads_with_its_encoding(tmp_path):
    text = "Notes\n대한민국은 민주공화국이다.\n"
    path = tmp_path / "notes.txt"
    path.write_bytes(text.encode("cp949"))
    with pytest.raises(ValueError) as info:
        load_text(path)
    message = str(info.value)
    assert "is not UTF-8 text" in message
    assert "byte offset 6" in message  # "Notes\n" is 6 bytes of ASCII, then the Korean starts
    assert "cp949" in message and "encoding='cp949'" in message and "--encoding cp949" in message
    assert load_text(path, encoding="cp949") == text


def test_unknown_encoding_is_named(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("abc")
    with pytest.raises(ValueError, match="'klingon' is not an encoding"):
        load_text(path, encoding="klingon")


def test_cli_reads_a_cp949_corpus(tmp_path):
    from gptcourse.cli import build_parser
    from gptcourse.train_plan import load_tokenizer_and_text

    path = tmp_path / "ko.txt"
    path.write_bytes("가나다라".encode("cp949"))
    args = build_parser().parse_args(["train", "--corpus", str(path), "--encoding", "cp949"])
    tokenizer, text = load_tokenizer_and_text(args.corpus, "char", encoding=args.encoding)
    assert text == "가나다라" and tokenizer.vocab_size == 4


def test_split_in_stages_cuts_the_pieces_of_the_stage_before():
    digits_alone = r"\p{N}|[^\p{N}]+"
    assert split_text("a  12 b", (digits_alone, GPT2_SPLIT_PATTERN)) == ["a", "  ", "1", "2", " b"]
    # One pattern alone cuts the whitespace run differently: the stages are not one regex.
    assert split_text("a  12 b") == ["a", " ", " 12", " b"]
    assert split_text("", (digits_alone,)) == []


def test_a_byte_without_a_token_is_refused_not_dropped():
    byte_ids = list(range(256))
    byte_ids[4] = None  # the vocabulary has no token for byte 0x04
    tok = BPETokenizer({}, byte_ids=byte_ids)
    assert tok.encode("ab") == [97, 98]
    with pytest.raises(ValueError, match="no token for the byte 0x04"):
        tok.encode("a\x04b")
    with pytest.raises(ValueError, match="256 entries"):
        BPETokenizer({}, byte_ids=[1] * 256)


# --- no silent wrong results: what a tokenizer is built from is checked ---------------------------
def test_text_the_pattern_does_not_cover_is_kept():
    """A narrow pattern used to drop the text between its matches ("the cat, 42!" -> "thecat")."""
    letters_only = r"\p{L}+"
    assert split_text("the cat, 42!", letters_only) == ["the", " ", "cat", ", 42!"]
    assert split_text("42 the", (letters_only,)) == ["42 ", "the"]
    tok = BPETokenizer({(116, 104): 256}, pattern=letters_only)
    assert tok.decode(tok.encode("the cat, 42!")) == "the cat, 42!"
    assert tok.encode("the!") == [256, 101, 33]
    trained = train_bpe("the cat, 42! the hat", 270, pattern=letters_only, progress=False)
    assert trained.decode(trained.encode("the cat, 42!")) == "the cat, 42!"
    # A pattern with a group: the whole match counts, not only the group (findall's surprise).
    assert split_text("ab12", r"(a)b") == ["ab", "12"]
    assert split_text("", r"\p{L}+") == [] and split_text("   ", r"\p{L}+") == ["   "]


def test_special_tokens_given_as_one_string_or_empty_are_refused():
    # A str is a sequence of characters: every character used to become a special token.
    with pytest.raises(TypeError, match=r"special_tokens must be a list of strings, e.g. "
                                        r"\['<\|endoftext\|>'\]"):
        train_bpe("hello world", 260, special_tokens=END_OF_TEXT, progress=False)
    with pytest.raises(ValueError, match="empty string"):
        train_bpe("hello world", 260, special_tokens=[""], progress=False)
    with pytest.raises(TypeError, match="must hold strings"):
        train_bpe("hello world", 260, special_tokens=[7], progress=False)
    tok = train_bpe("hello world", 260, special_tokens=[END_OF_TEXT], progress=False)
    assert tok.special_tokens == {END_OF_TEXT: 260}
    assert tok.encode("hello", allowed_special="all") == tok.encode_ordinary("hello")


def test_merge_ids_that_collide_are_refused():
    """A merge whose id is a byte's or another merge's used to decode to the wrong text."""
    with pytest.raises(ValueError, match=r"merge \(104, 105\) -> 97 reuses id 97, already the id "
                                         r"of byte 0x61"):
        BPETokenizer({(104, 105): 97})
    with pytest.raises(ValueError, match=r"merges \(104, 105\) and \(97, 98\) both make id 256"):
        BPETokenizer({(104, 105): 256, (97, 98): 256})
    with pytest.raises(ValueError, match=r"special token '<\|x\|>' has id 256, already the id of "
                                         r"merge \(104, 105\)"):
        BPETokenizer({(104, 105): 256}, special_tokens={"<|x|>": 256})
    with pytest.raises(ValueError, match="special tokens '<a>' and '<b>' both have id 300"):
        BPETokenizer({}, special_tokens={"<a>": 300, "<b>": 300})
    with pytest.raises(ValueError, match="special token '<a>' has id 65, already the id of byte 0x41"):
        BPETokenizer({}, special_tokens={"<a>": 65})
    with pytest.raises(ValueError, match="order they were learned"):
        BPETokenizer({(256, 97): 257, (104, 105): 258})  # 256 is made later, by no merge at all


def test_a_vocabulary_in_another_layout_is_accepted():
    """SmolLM2 puts special tokens first, then the bytes it has, then the merges: all valid."""
    special = {"<|endoftext|>": 0, "<|im_start|>": 1}
    byte_ids = [None] * 256
    for n, b in enumerate(range(32, 127)):  # printable ASCII only, from id 2
        byte_ids[b] = 2 + n
    h, i = byte_ids[ord("h")], byte_ids[ord("i")]
    tok = BPETokenizer({(h, i): 97}, special_tokens=special, byte_ids=byte_ids)
    assert tok.encode("hi hi") == [97, byte_ids[32], 97]
    assert tok.decode([1, 97]) == "<|im_start|>hi"
    assert tok.vocab_size == tok.n_vocab == 98


@pytest.mark.parametrize("build, error, words", [
    (lambda: BPETokenizer([((97, 98), 256)]), TypeError, r"merges must be a dict"),
    (lambda: BPETokenizer({(97,): 256}), ValueError, r"pair of ids .* key \(97,\)"),
    (lambda: BPETokenizer({(97, 98): "256"}), ValueError, r"new id must be an int"),
    (lambda: BPETokenizer({(97, 98): -1}), ValueError, r"new id must be an int from 0"),
    (lambda: BPETokenizer({(97, 98): 10**30}), ValueError, r"new id must be an int from 0"),
    (lambda: BPETokenizer({(True, 98): 256}), ValueError, r"pair of ids"),
    (lambda: BPETokenizer({}, special_tokens=["<|endoftext|>"]), TypeError, r"dict \{token: id\}"),
    (lambda: BPETokenizer({}, special_tokens={"": 300}), ValueError, r"empty string"),
    (lambda: BPETokenizer({}, special_tokens={"<a>": 2.0}), ValueError, r"an id is an int"),
    (lambda: BPETokenizer({}, special_tokens={"<a>": -5}), ValueError, r"an id is an int"),
    (lambda: BPETokenizer({}, byte_ids="abc"), TypeError, r"byte_ids must be a list"),
    (lambda: BPETokenizer({}, byte_ids=[None] * 256), ValueError, r"vocabulary is empty"),
    (lambda: BPETokenizer({}, pattern="(unclosed"), ValueError, r"not a valid regular expression"),
    (lambda: BPETokenizer({}, pattern=b"\\w+"), TypeError, r"pattern must be None, a regular"),
    (lambda: BPETokenizer({}, pattern=5), TypeError, r"pattern must be None, a regular"),
    (lambda: train_bpe("", 300, progress=False), ValueError, r"text is empty"),
    (lambda: train_bpe("abc", 300, pattern="[", progress=False), ValueError, r"not a valid regular"),
])
def test_bad_building_blocks_get_a_clear_error(build, error, words):
    with pytest.raises(error, match=words):
        build()


def test_bad_arguments_to_encode_and_decode_get_a_clear_error():
    tok = BPETokenizer({}, special_tokens={END_OF_TEXT: 256})
    for ids in (None, "abc", b"abc", 5):
        with pytest.raises(TypeError, match="ids must be a list of token ids"):
            tok.decode(ids)
    for ids in ([-1], [10**30], [257], [1.0], [True]):
        with pytest.raises(ValueError, match="not ids of this tokenizer"):
            tok.decode(ids)
    for allowed in (None, 5, {"a": 1}, b"x"):
        with pytest.raises(TypeError, match="allowed_special must be a set"):
            tok.encode("hi", allowed_special=allowed)
    with pytest.raises(TypeError, match="must hold special-token strings"):
        tok.encode("hi", allowed_special={END_OF_TEXT, 5})
    assert tok.decode(tok.encode("hi<|endoftext|>", allowed_special=[END_OF_TEXT])) == "hi<|endoftext|>"


def test_more_bad_arguments_get_a_clear_error():
    tok = BPETokenizer({(104, 105): 256})
    with pytest.raises(TypeError, match="text must be a str"):
        split_text(None)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        split_text("abc", "(")
    with pytest.raises(TypeError, match="piece must be bytes"):
        tok.encode_piece("hi")
    with pytest.raises(TypeError, match="must hold special-token strings"):
        tok.encode("hi", allowed_special=[["<|endoftext|>"]])
    with pytest.raises(TypeError, match="ids must be a list of token ids"):
        tok.decode({104: 1})
    with pytest.raises(TypeError, match="progress must be True or False"):
        train_bpe("hi hi", 260, progress="no")
