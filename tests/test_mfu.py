"""MFU: the arithmetic, the GPU peak table, the measured CPU peak and the throughput timer.
(Speeds are measured by benchmarks/mfu.py, never asserted here.)"""

import pytest
import torch

from gptcourse.config import GPTConfig
from gptcourse.mfu import (
    attention_path,
    gpu_peak,
    measure_matmul_flops,
    measure_training_throughput,
    mfu,
    peak_flops,
)
from gptcourse.model import GPTModel

TINY = GPTConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)


def test_mfu_arithmetic():
    assert mfu(1000.0, 1e9, 4e12) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="peak must be > 0"):
        mfu(1.0, 1.0, 0.0)


@pytest.mark.parametrize("name, dtype, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H100 PCIe", "bf16", 756.0),
    ("NVIDIA H200", "bf16", 989.4),
    ("NVIDIA A100-SXM4-40GB", "bf16", 312.0),
    ("NVIDIA A10G", "bf16", 125.0),
    ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
    ("Tesla T4", "bf16", 65.0),
    ("NVIDIA H100 80GB HBM3", "fp32", 66.9),
    ("NVIDIA A100-SXM4-40GB", "fp32", 19.5),
])
def test_gpu_peak_table(name, dtype, tflops):
    assert gpu_peak(name, dtype).flops == pytest.approx(tflops * 1e12)


def test_unknown_gpu_asks_for_an_override():
    with pytest.raises(ValueError, match="no peak known for GPU 'NVIDIA L40S'.*pass peak_tflops="):
        gpu_peak("NVIDIA L40S")  # not mistaken for an L4
    with pytest.raises(ValueError, match="dtype must be one of"):
        gpu_peak("NVIDIA L4", "fp8")


def test_peak_flops_override_and_measured_cpu_peak():
    assert peak_flops("cpu", peak_tflops=2.5).flops == 2.5e12
    with pytest.raises(ValueError, match="peak_tflops must be a positive number"):
        peak_flops("cpu", peak_tflops=-1)
    assert measure_matmul_flops("cpu", n=64, repeats=2) > 0


def test_attention_path():
    assert attention_path(GPTModel(TINY)) == "manual"
    assert attention_path(GPTModel(TINY.replace(fast=True))) == "scaled_dot_product_attention"
    assert attention_path(torch.nn.Linear(2, 2)) == "none"


def test_throughput_counts_only_timed_steps():
    model = GPTModel(TINY)
    result = measure_training_throughput(model, batch_size=2, seq_len=8, steps=3, warmup=1)
    assert len(result.step_times) == 3 and result.tokens_per_step == 16
    assert result.tokens_per_s == pytest.approx(16 * 3 / sum(result.step_times))


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be a positive int"),
    ({"warmup": -1}, "warmup must be an int >= 0"),
    ({"dtype": "fp64"}, "dtype must be one of"),
])
def test_throughput_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_training_throughput(GPTModel(TINY), 2, 8, **kwargs)
