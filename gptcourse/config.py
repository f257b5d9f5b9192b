"""The model's configuration: one small dataclass, checked on creation, with named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .validate import require_flag, require_positive_int, require_probability


def described(default, help: str, flag: bool = False):
    """A dataclass field with its help text (and whether `gptcourse train` has a flag for it)."""
    return field(default=default, metadata={"help": help, "flag": flag})


def replace_fields(obj, what: str, **changes):
    """dataclasses.replace, with a clear error that lists the valid names for an unknown one."""
    valid = [f.name for f in dataclasses.fields(obj)]
    unknown = sorted(set(changes) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid: {valid}")
    return dataclasses.replace(obj, **changes)


@dataclass(frozen=True)
class GPTConfig:
    """Every size that defines a GPT model. Defaults are GPT-2 small (124M)."""

    # described() gives each field its help text: also its line in `gptcourse train --help`.
    vocab_size: int = described(50257, "number of distinct tokens")
    context_length: int = described(1024, "tokens the model sees at once", flag=True)
    emb_dim: int = described(768, "size of each token's vector", flag=True)
    n_heads: int = described(12, "attention heads per block", flag=True)
    n_layers: int = described(12, "transformer blocks", flag=True)
    drop_rate: float = described(0.1, "dropout probability (0 for short runs)", flag=True)
    qkv_bias: bool = described(False, "biases in the query/key/value projections (GPT-2's "
                                      "weights have them)")
    tie_weights: bool = described(True, "the output head shares the token embedding matrix")
    # A speed switch, not a size: the attention, LayerNorm and GELU compute the same functions
    # (up to float rounding) through the fastest kernels for the device: attention through
    # F.scaled_dot_product_attention, or on a CPU for short contexts two batched matmuls, faster
    # there (gptcourse.attention.SHORT_CONTEXT_ON_CPU); LayerNorm and GELU in one kernel each.
    fast: bool = described(False, "the fast kernels: the same attention, LayerNorm and GELU in "
                                  "fewer, larger operations")

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            # object.__setattr__: the dataclass is frozen; numpy ints are stored as Python ints.
            object.__setattr__(self, name, require_positive_int(name, getattr(self, name)))
        require_probability("drop_rate", self.drop_rate, hint=": it is the probability of zeroing "
                            "a value (0.0 turns dropout off)")
        for name in ("qkv_bias", "tie_weights", "fast"):
            require_flag(name, getattr(self, name))
        if self.emb_dim % self.n_heads != 0:
            raise ValueError(
                f"emb_dim={self.emb_dim} is not divisible by n_heads={self.n_heads}: every head gets "
                f"emb_dim // n_heads dimensions, so pick n_heads that divides emb_dim"
            )

    @property
    def head_dim(self) -> int:
        """Dimensions per attention head (emb_dim // n_heads)."""
        return self.emb_dim // self.n_heads

    def replace(self, **changes) -> GPTConfig:
        """A copy with some fields changed (and checked again)."""
        return replace_fields(self, "config field(s)", **changes)

    def to_dict(self) -> dict:
        """The fields as a plain dict (GPTConfig.from_dict turns it back into a config)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> GPTConfig:
        """GPTConfig(**fields), also for a dict saved when the speed switch had two fields:
        use_sdpa (attention) and use_fused (LayerNorm and GELU) become `fast` if either was on."""
        fields = dict(fields)
        old = [fields.pop(name) for name in ("use_sdpa", "use_fused") if name in fields]
        if old and "fast" not in fields:
            # A damaged value goes through as it is, for __post_init__ to name.
            fields["fast"] = any(old) if all(isinstance(v, bool) for v in old) else old[0]
        return cls(**fields)


PRESETS: dict[str, GPTConfig] = {
    "gpt2-small": GPTConfig(),
    "gpt2-medium": GPTConfig(emb_dim=1024, n_heads=16, n_layers=24),
    "gpt2-large": GPTConfig(emb_dim=1280, n_heads=20, n_layers=36),
    "gpt2-xl": GPTConfig(emb_dim=1600, n_heads=25, n_layers=48),
    # Trains on a laptop CPU in about a minute on character-level Tiny Shakespeare. Two wide
    # blocks reach a given loss sooner than three or four narrower ones: fewer, larger matmuls
    # waste less time around them (benchmarks/time_to_quality.py).
    "cpu-small": GPTConfig(vocab_size=65, context_length=64, emb_dim=192, n_heads=4, n_layers=2,
                           drop_rate=0.0, fast=True),
}


def get_config(name: str, **overrides) -> GPTConfig:
    """A preset by name (see PRESETS), optionally with some fields changed."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
