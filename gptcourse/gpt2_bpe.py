"""GPT-2's own BPE, rebuilt from tiktoken's token ranks and run by our `BPETokenizer`.

tiktoken stores GPT-2's vocabulary as `rank[token bytes] = id`, without the merges. A token's
rank is also the order in which it was learned, so the merges can be recovered: a token of rank
r is the merge of the two pieces that BPE, using only the tokens ranked below r, splits it into.
"""

from __future__ import annotations

from functools import lru_cache

from .bpe import GPT2_SPLIT_PATTERN, BPETokenizer, Pair


def _split(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """BPE on `token`'s bytes with only the tokens ranked below `max_rank` (lowest rank first)."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_rank = None, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def merges_from_ranks(ranks: dict[bytes, int]) -> tuple[dict[Pair, int], list[int]]:
    """Recover (merges, byte_ids) from tiktoken's `rank[token bytes]`.

    `merges[(a, b)] = rank` of the token made from tokens a and b; `byte_ids[b]` is the id of the
    single byte b (GPT-2 numbers the 256 bytes in its own order, not 0..255).
    """
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"ranks must hold all 256 single bytes; missing {missing[:5]!r}")
    byte_ids = [ranks[bytes([b])] for b in range(256)]
    merges: dict[Pair, int] = {}
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = _split(token, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not the merge of two earlier tokens")
        merges[(ranks[parts[0]], ranks[parts[1]])] = rank
    return merges, byte_ids


def _special_tokens(encoding) -> dict[str, int]:
    return {token: encoding.encode_single_token(token) for token in encoding.special_tokens_set}


def gpt2_ranks() -> dict[bytes, int]:
    """GPT-2's table `rank[token bytes] = id` of its ordinary tokens (the special ones left out)."""
    from .tokenizers import gpt2_tokenizer

    encoding = gpt2_tokenizer()  # the files from tiktoken's cache, with a clear offline message
    special_ids = set(_special_tokens(encoding).values())
    # Every ordinary token's bytes through tiktoken's public API: its rank is its id.
    return {encoding.decode_single_token_bytes(i): i for i in range(encoding.n_vocab)
            if i not in special_ids}


@lru_cache(maxsize=1)
def gpt2_bpe() -> BPETokenizer:
    """GPT-2's tokenizer as a `BPETokenizer`: the same ids as tiktoken's "gpt2" encoding."""
    from .tokenizers import gpt2_tokenizer

    merges, byte_ids = merges_from_ranks(gpt2_ranks())
    return BPETokenizer(merges, special_tokens=_special_tokens(gpt2_tokenizer()),
                        pattern=GPT2_SPLIT_PATTERN, byte_ids=byte_ids)
