"""Checker for chapter 4's transformer block: pre-LayerNorm, two shortcuts, dropout in the right places."""

from __future__ import annotations

import torch

from ..config import GPTConfig
from ..layers import TransformerBlock
from . import Check, close, diagnose, learner_name, wrong_shape
from .layers import LAYER_ERRORS

# Batch 2, 6 tokens, width 16, 2 heads of 8: every size differs, so a wrong one can be named.
BLOCK_CFG = GPTConfig(vocab_size=10, context_length=6, emb_dim=16, n_heads=2, n_layers=1,
                      drop_rate=0.0)
BLOCK_SIZES = {"emb_dim": 16, "head_dim": 8, "num_heads": 2}


def _block_variant(block: TransformerBlock, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The block's forward with one deliberate change, to recognise a learner's mistake."""
    att, ff, n1, n2, drop = block.att, block.ff, block.norm1, block.norm2, block.drop_shortcut
    if kind == "post-ln":
        h = n1(x + drop(att(x)))
        return n2(h + drop(ff(h)))
    if kind == "no shortcuts":
        return drop(ff(n2(drop(att(n1(x))))))
    if kind == "no attention shortcut":
        h = drop(att(n1(x)))
        return h + drop(ff(n2(h)))
    if kind == "no feed-forward shortcut":
        return drop(ff(n2(x + drop(att(n1(x))))))
    if kind == "parallel":
        return x + drop(att(n1(x))) + drop(ff(n2(x)))
    if kind == "norms swapped":
        h = x + drop(att(n2(x)))
        return h + drop(ff(n1(h)))
    if kind == "shortcut normalised":
        h = n1(x)
        h = h + drop(att(h))
        g = n2(h)
        return g + drop(ff(g))
    if kind == "dropout after add":
        h = drop(x + att(n1(x)))
        return drop(h + ff(n2(h)))
    if kind == "attention branch only":
        h = x + drop(att(n1(x)))
        return h + ff(n2(h))
    if kind == "feed-forward branch only":
        h = x + att(n1(x))
        return h + drop(ff(n2(h)))
    if kind == "feed-forward first":
        h = x + drop(ff(n2(x)))
        return h + drop(att(n1(h)))
    if kind == "one norm twice":
        h = x + drop(att(n1(x)))
        return h + drop(ff(n1(h)))
    if kind == "no norms":
        h = x + drop(att(x))
        return h + drop(ff(h))
    if kind == "no dropout":
        h = x + att(n1(x))
        return h + ff(n2(h))
    raise ValueError(kind)


BLOCK_MISTAKES = {
    "post-ln": "this is post-LN (normalising after adding the shortcut, as the 2017 "
               "Transformer did): GPT-2 is pre-LN, x = x + drop(att(norm1(x)))",
    "no shortcuts": "there are no shortcuts: add the input back, x = x + drop(att(norm1(x))), "
                    "then x = x + drop(ff(norm2(x)))",
    "no attention shortcut": "the attention half has no shortcut: x = x + drop(att(norm1(x)))",
    "no feed-forward shortcut": "the feed-forward half has no shortcut: x = x + drop(ff(norm2(x)))",
    "parallel": "the feed-forward reads the block's input, not the result of the attention "
                "half: update x after attention, then x = x + drop(ff(norm2(x)))",
    "norms swapped": "norm1 and norm2 are swapped: norm1 goes before attention, norm2 before "
                     "the feed-forward",
    "feed-forward first": "the two halves are in the wrong order: attention comes first, "
                          "x = x + drop(att(norm1(x))), then the feed-forward",
    "one norm twice": "norm1 is used for both halves: the feed-forward reads norm2(x), a "
                      "LayerNorm of its own with its own scale and shift",
    "no norms": "the LayerNorms are never applied: each branch reads norm1(x) or norm2(x), "
                "not x",
    "shortcut normalised": "the shortcut carries the normalised x: add the un-normalised x, "
                           "x = x + drop(att(norm1(x)))",
}


def _make_block(check: Check, block_class, cfg: GPTConfig):
    block = check.call(f"{learner_name(block_class, 'TransformerBlock')}(cfg)", block_class, cfg)
    ref = TransformerBlock(cfg)
    check.copy_weights(block, ref, "the block's parameters are named differently from the reference: "
                       "keep self.att, self.ff, self.norm1, self.norm2 and self.drop_shortcut from __init__")
    for module in (block, ref):  # a trained-looking LayerNorm, so a swapped norm shows
        with torch.no_grad():
            gen = torch.Generator().manual_seed(9)
            for norm in (module.norm1, module.norm2):
                norm.scale.copy_(1 + 0.5 * torch.randn(cfg.emb_dim, generator=gen))
                norm.shift.copy_(0.5 * torch.randn(cfg.emb_dim, generator=gen))
    return block, ref


def check_transformer_block(block_class) -> Check:
    """Check a learner's TransformerBlock(cfg).forward: pre-LN, shortcuts, dropout on each branch."""
    with Check("TransformerBlock", seed=0, known=LAYER_ERRORS) as check:
        block, ref = _make_block(check, block_class, BLOCK_CFG)
        block.eval()
        ref.eval()
        x = torch.randn(2, 6, BLOCK_CFG.emb_dim, generator=torch.Generator().manual_seed(10)) * 2 + 1
        with torch.no_grad():
            out = check.call("block(x)", block, x.clone())
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                check.stop(wrong_shape("block(x)", out, tuple(x.shape), BLOCK_SIZES,
                                       f" (the output keeps the input's shape (B, T, C) = {tuple(x.shape)})"))
            check.ok(f"the output keeps the input's shape {tuple(x.shape)}")
            if close(out, ref(x), atol=1e-5):
                check.ok("in eval mode, with the same weights, the output matches the reference "
                         "(pre-LN, two shortcuts)")
            else:
                mistakes = {message: (lambda kind=kind: _block_variant(ref, x, kind))
                            for kind, message in BLOCK_MISTAKES.items()}
                check.stop(diagnose(out, mistakes, atol=1e-5, default=(
                    "the output differs from the reference: x = x + drop(att(norm1(x))), "
                    "then x = x + drop(ff(norm2(x)))"), expected=ref(x), sizes=BLOCK_SIZES))
            again = check.call("block(x) a second time", block, x.clone())
            check.expect(close(again, out, atol=0), "in eval mode the same input gives the same output",
                         "in eval mode two calls gave different outputs: is something random "
                         "left on outside dropout?")
        _check_block_dropout(check, block_class)
    return check


def _check_block_dropout(check: Check, block_class) -> None:
    """In training mode, with the same seed, dropout must hit the same places as the reference."""
    cfg = BLOCK_CFG.replace(drop_rate=0.5)
    block, ref = _make_block(check, block_class, cfg)
    block.train()
    ref.train()
    x = torch.randn(2, 6, cfg.emb_dim, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        torch.manual_seed(12)
        out = check.call("block(x) in training mode", block, x.clone())
        torch.manual_seed(12)
        expected = ref(x)
        if close(out, expected, atol=1e-5):
            check.ok("in training mode, dropout is applied to each branch before its shortcut")
            return
        variants = {}
        for kind, message in [
            ("no dropout", "drop_shortcut is never applied: x = x + self.drop_shortcut(...) on "
                           "each branch (it only acts in training mode)"),
            ("dropout after add", "dropout is applied after adding the shortcut: drop only the "
                                  "branch, x = x + self.drop_shortcut(self.att(self.norm1(x)))"),
            ("attention branch only", "drop_shortcut is applied to the attention branch only: "
                                      "the feed-forward branch needs it too, "
                                      "x = x + self.drop_shortcut(self.ff(self.norm2(x)))"),
            ("feed-forward branch only", "drop_shortcut is applied to the feed-forward branch only: "
                                         "the attention branch needs it too, "
                                         "x = x + self.drop_shortcut(self.att(self.norm1(x)))"),
        ]:
            torch.manual_seed(12)
            variants[message] = _block_variant(ref, x, kind)
        check.fail(diagnose(out, variants, atol=1e-5, default=(
            "in training mode the output differs from the reference: call self.drop_shortcut "
            "once on each branch's output, attention first, before adding it to x"),
            expected=expected, sizes=BLOCK_SIZES))

