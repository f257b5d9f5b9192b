"""The corpus, the split, random batches and the sliding-window dataset."""

import math
import warnings

import pytest
import torch

from gptcourse.data import (
    SlidingWindowDataset,
    create_dataloader,
    get_batch,
    load_text,
    train_val_split,
)
from gptcourse.text_files import EncodingMismatchWarning


# --- load_text ----------------------------------------------------------------------------------
def test_tiny_shakespeare_size_and_vocabulary():
    text = load_text()
    assert len(text) == 1_115_394
    assert len(set(text)) == 65
    assert text.startswith("First Citizen:")


def test_any_utf8_file_by_path(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("동해 물과 백두산이\nmarzo è qui\n", encoding="utf-8")
    assert load_text(path) == "동해 물과 백두산이\nmarzo è qui\n"
    assert load_text(str(path)) == load_text(path)


def test_byte_order_mark_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello".encode())
    assert load_text(path) == "hello"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*UTF-8 text file"):
        load_text(tmp_path / "nope.txt")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_text(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_text(path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8.*save it as UTF-8"):
        load_text(path)


KOREAN_NOTES = "Notes\n대한민국은 민주공화국이다. café\r\nend\n"


def test_utf8_read_as_a_single_byte_encoding_warns_in_one_line(tmp_path):
    """latin-1 reads any bytes, so a UTF-8 file read as latin-1 used to give mojibake silently."""
    path = tmp_path / "notes.txt"
    path.write_bytes(KOREAN_NOTES.encode("utf-8"))
    assert load_text(path) == KOREAN_NOTES.replace("\r\n", "\n")  # the right reading
    with pytest.warns(EncodingMismatchWarning) as caught:
        text = load_text(path, encoding="latin-1")
    assert text.startswith("Notes\në\x8c\x80")  # read as asked ...
    message = str(caught[0].message)  # ... but said, in one line
    assert "\n" not in message and "was read as latin-1" in message
    assert "'대', '한', '민'" in message and "Leave out encoding=" in message
    french = tmp_path / "french.txt"
    french.write_bytes("café crème".encode())
    with pytest.warns(EncodingMismatchWarning, match="characters such as 'é', 'è'"):
        assert load_text(french, encoding="cp1252") == "cafÃ© crÃ¨me"
    # cp1252 has no character for some bytes of UTF-8 Korean: an error that suggests UTF-8.
    with pytest.raises(ValueError, match="is not cp1252 text.*reads as text in utf-8.*"
                                         "encoding='utf-8'"):
        load_text(path, encoding="cp1252")
    with pytest.warns(EncodingMismatchWarning, match="was read as utf-16-le"):
        load_text(path, encoding="utf-16-le")  # an even number of bytes: CJK-looking nonsense
    plain = tmp_path / "plain.txt"
    plain.write_text("only ASCII\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ASCII is the same in both: nothing to warn about
        assert load_text(plain, encoding="latin-1") == "only ASCII\n"
        assert load_text(tmp_path / "notes.txt", encoding="utf-8").startswith("Notes")
        korean = tmp_path / "constitution-cp949.txt"  # the real corpus, as Korean Windows saves it
        korean.write_bytes(load_text("korean-constitution").encode("cp949"))
        assert load_text(korean, encoding="cp949") == load_text("korean-constitution")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_are_named_not_misread(tmp_path, codec):
    path = tmp_path / "wide.txt"
    path.write_bytes(KOREAN_NOTES.encode(codec))
    with pytest.raises(ValueError) as info:
        load_text(path)
    message = str(info.value)
    assert "cp1252" not in message.split("None of")[0].split("reads as text in")[-1]
    family = "utf-32" if codec == "utf-32" else "utf-16"
    wanted = codec if codec.endswith(("le", "be")) else family
    assert f"encoding='{wanted}'" in message
    assert load_text(path, encoding=wanted) == KOREAN_NOTES.replace("\r\n", "\n")
    if codec in ("utf-16", "utf-32"):  # a byte-order mark: refused for any other encoding too
        with pytest.raises(ValueError, match=f"byte-order mark of {family.upper()}.*not latin-1"):
            load_text(path, encoding="latin-1")


def test_only_encodings_that_read_the_file_as_text_are_suggested(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="None of the usual encodings .* find out the file's "
                                         "encoding") as info:
        load_text(path)
    assert "encoding='cp949'" not in str(info.value)


@pytest.mark.parametrize("encoding, words", [
    ("rot13", "'rot13' is not a text encoding"), ("base64", "'base64' is not a text encoding"),
    ("zlib", "'zlib' is not a text encoding"), ("undefined", "'undefined' is not a text encoding"),
    ("klingon", "'klingon' is not an encoding Python knows"), (None, "None is not an encoding"),
    (8, "8 is not an encoding"),
])
def test_codecs_that_are_not_text_encodings_get_one_line(tmp_path, encoding, words):
    path = tmp_path / "a.txt"
    path.write_text("abc")
    with pytest.raises(ValueError, match=words) as info:
        load_text(path, encoding=encoding)
    assert "\n" not in str(info.value)


# --- train_val_split ----------------------------------------------------------------------------
def test_split_default_is_90_10():
    train, val = train_val_split(list(range(100)))
    assert train == list(range(90)) and val == list(range(90, 100))


def test_split_works_on_tensors_and_text():
    train, val = train_val_split(torch.arange(10), train_fraction=0.8)
    assert torch.equal(train, torch.arange(8)) and torch.equal(val, torch.arange(8, 10))
    train_text, val_text = train_val_split("abcdefghij")
    assert (train_text, val_text) == ("abcdefghi", "j")


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_split_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match="train_fraction must be between 0 and 1"):
        train_val_split(list(range(10)), fraction)


def test_split_fraction_wrong_type():
    with pytest.raises(TypeError, match="train_fraction must be a number"):
        train_val_split(list(range(10)), "0.9")


@pytest.mark.parametrize(("data", "fraction"), [([7], 0.9), ([1, 2, 3], 0.1)])
def test_split_too_short(data, fraction):
    with pytest.raises(ValueError, match="too short to split.*one of the two parts would be empty"):
        train_val_split(data, fraction)


# --- get_batch ----------------------------------------------------------------------------------
def test_get_batch_shapes_and_shift():
    data = torch.arange(100)
    x, y = get_batch(data, block_size=8, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)  # y is x shifted by one token
    assert torch.equal(x - x[:, :1], torch.arange(8).expand(4, 8))  # contiguous windows


def test_get_batch_is_reproducible_with_a_generator():
    data = torch.arange(1000)
    a = get_batch(data, 8, 4, generator=torch.Generator().manual_seed(42))
    b = get_batch(data, 8, 4, generator=torch.Generator().manual_seed(42))
    c = get_batch(data, 8, 4, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_get_batch_windows_stay_inside_and_reach_the_end():
    data = torch.arange(10)
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(50):
        x, y = get_batch(data, 4, 8, generator=gen)
        starts.update(x[:, 0].tolist())
        assert y.max() <= 9
    assert starts == set(range(6))  # every start 0..len-block_size-1, including the last


def test_get_batch_smallest_data():
    x, y = get_batch(torch.tensor([5, 6, 7]), block_size=2, batch_size=2)
    assert x.tolist() == [[5, 6], [5, 6]] and y.tolist() == [[6, 7], [6, 7]]


def test_get_batch_accepts_a_list():
    x, y = get_batch(list(range(20)), 4, 2)
    assert torch.equal(y, x + 1)


@pytest.mark.parametrize("device", ["meta", torch.device("meta")])
def test_get_batch_device(device):
    # "meta" tensors have a device but no data, so this runs without a GPU.
    x, y = get_batch(torch.arange(50), 4, 2, device=device)
    assert x.device.type == "meta" and y.device.type == "meta"


def test_get_batch_too_short_data():
    with pytest.raises(ValueError, match=r"data has 8 tokens, too short for block_size=8.*block_size \+ 1 = 9"):
        get_batch(torch.arange(8), block_size=8, batch_size=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"block_size": 0}, ValueError, "block_size must be a positive int, got 0"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int, got 0"),
        ({"block_size": 4.0}, TypeError, "block_size must be a positive int, got 4.0"),
        ({"data": "some text"}, TypeError, "data is text: encode it"),
        ({"data": torch.rand(50)}, TypeError, "integer token ids"),
        ({"data": torch.zeros(5, 10, dtype=torch.long)}, ValueError, "1-D sequence"),
    ],
)
def test_get_batch_bad_arguments(kwargs, error, match):
    args = {"data": torch.arange(50), "block_size": 4, "batch_size": 2} | kwargs
    with pytest.raises(error, match=match):
        get_batch(**args)


# --- SlidingWindowDataset and create_dataloader -------------------------------------------------
@pytest.mark.parametrize(("n", "context_length", "stride"), [(12, 4, 4), (12, 4, 1), (12, 3, 2), (5, 4, 1), (100, 8, 3)])
def test_dataset_length(n, context_length, stride):
    ds = SlidingWindowDataset(torch.arange(n), context_length, stride)
    # starts 0, stride, 2*stride, ... while a target token is left after the window
    assert len(ds) == math.ceil((n - context_length) / stride)


def test_dataset_items_and_stride():
    ds = SlidingWindowDataset(torch.arange(12), context_length=4, stride=4)
    assert len(ds) == 2  # a third window at 8 would need token 12 as a target
    x, y = ds[1]
    assert x.tolist() == [4, 5, 6, 7] and y.tolist() == [5, 6, 7, 8]
    overlapping = SlidingWindowDataset(torch.arange(12), context_length=4, stride=1)
    assert [overlapping[i][0][0].item() for i in range(len(overlapping))] == list(range(8))
    assert overlapping[-1][1].tolist() == [8, 9, 10, 11]  # the last window uses the last token


def test_dataset_index_out_of_range():
    ds = SlidingWindowDataset(torch.arange(12), 4, 4)
    with pytest.raises(IndexError):
        ds[2]


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.arange(12), 0, 1), ValueError, "context_length must be a positive int"),
        ((torch.arange(12), 4, 0), ValueError, "stride must be a positive int"),
        ((torch.arange(12), 4, 1.5), TypeError, "stride must be a positive int, got 1.5"),
        ((torch.arange(4), 4, 1), ValueError, "token_ids has 4 ids, too short for context_length=4"),
        (([0.5, 1.5, 2.5], 1, 1), TypeError, "token_ids must hold integer token ids"),
        (("hello", 2, 1), TypeError, "token_ids is text"),
    ],
)
def test_dataset_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        SlidingWindowDataset(*args)


def test_dataloader_batches():
    loader = create_dataloader(torch.arange(101), context_length=4, stride=4, batch_size=8)
    assert len(loader.dataset) == 25
    assert len(loader) == 3  # drop_last: 25 windows -> 3 full batches of 8
    x, y = next(iter(loader))
    assert x.shape == y.shape == (8, 4)
    assert torch.equal(y, x + 1)


def test_dataloader_shuffle_is_reproducible():
    def first_batch(seed):
        loader = create_dataloader(torch.arange(200), 4, 4, batch_size=4,
                                   generator=torch.Generator().manual_seed(seed))
        return next(iter(loader))[0]

    assert torch.equal(first_batch(0), first_batch(0))
    assert not torch.equal(first_batch(0), first_batch(1))


def test_dataloader_without_shuffle_keeps_order():
    loader = create_dataloader(torch.arange(20), 4, 4, batch_size=2, shuffle=False, drop_last=False)
    assert [x[:, 0].tolist() for x, _ in loader] == [[0, 4], [8, 12]]


@pytest.mark.parametrize("name", ["a" * 5000, "a\x00b"])
def test_a_path_no_file_can_have_is_one_clear_error(name):
    with pytest.raises(ValueError, match="cannot use .* as a corpus file|does not exist"):
        load_text(name)
