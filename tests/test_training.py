"""Tests for chapter 6's training: LR schedule, weight-decay groups, the loop, resuming, devices."""

import copy
import math
import shutil

import pytest
import torch

from gptcourse.checkpoint import (
    config_of,
    load_checkpoint,
    load_model_state,
    restore_state,
    save_checkpoint,
)
from gptcourse.config import GPTConfig
from gptcourse.data import create_dataloader, get_batch
from gptcourse.device import (
    COMPILE_PAYS_BACK_FROM,
    CompileError,
    autocast,
    choose_compile,
    pick_device,
)
from gptcourse.loss import calc_loss_batch, calc_loss_loader, split_loss
from gptcourse.model import GPTModel
from gptcourse.optim import lr_at, make_optimizer, param_groups
from gptcourse.train import TrainSettings, train
from gptcourse.validate import CourseWarning

CFG = GPTConfig(vocab_size=7, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.2)


def data(n=600, seed=0):
    # A learnable pattern with some noise: ids mostly count up modulo 7.
    gen = torch.Generator().manual_seed(seed)
    ids = torch.arange(n) % 7
    noise = torch.rand(n, generator=gen) < 0.2
    return torch.where(noise, torch.randint(7, (n,), generator=gen), ids)


SETTINGS = TrainSettings(max_iters=12, batch_size=4, lr=1e-2, min_lr=1e-3, warmup_iters=3,
                         eval_interval=5, eval_iters=2, seed=3)


# --- the learning-rate schedule ------------------------------------------------------------------
def test_lr_schedule_key_steps():
    args = {"max_lr": 1.0, "min_lr": 0.1, "warmup_iters": 10, "max_iters": 110}
    assert lr_at(0, **args) == pytest.approx(0.1)     # (0 + 1) / 10: the first step learns already
    assert lr_at(4, **args) == pytest.approx(0.5)
    assert lr_at(9, **args) == pytest.approx(1.0)     # warm-up ends at the peak...
    assert lr_at(10, **args) == pytest.approx(1.0)    # ...where the cosine starts
    assert lr_at(60, **args) == pytest.approx(0.55)   # half-way down: (max + min) / 2
    assert lr_at(110, **args) == pytest.approx(0.1)   # the end
    assert lr_at(500, **args) == pytest.approx(0.1)   # and after it
    values = [lr_at(s, **args) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises during the decay


def test_lr_schedule_without_warmup_and_without_decay():
    assert lr_at(0, 2.0, 0.5, warmup_iters=0, max_iters=4) == pytest.approx(2.0)
    assert lr_at(3, 2.0, 0.5, warmup_iters=4, max_iters=4) == pytest.approx(2.0)
    assert lr_at(4, 2.0, 0.5, warmup_iters=4, max_iters=4) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "args, match",
    [
        ((-1, 1.0, 0.1, 1, 5), "step must be an int >= 0"),
        ((0, 1.0, 2.0, 1, 5), "min_lr <= max_lr"),
        ((0, 1.0, 0.1, 6, 5), "warmup_iters <= max_iters"),
    ],
)
def test_lr_schedule_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        lr_at(*args)


# --- weight-decay groups -------------------------------------------------------------------------
def test_weight_decay_only_on_weight_matrices():
    model = GPTModel(CFG)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert all(p.dim() == 2 for p in decay["params"])
    assert "tok_emb.weight" in kept and "pos_emb.weight" in kept  # embeddings: no decay
    assert "trf_blocks.0.att.W_query.weight" in decayed
    assert "trf_blocks.0.ff.layers.0.weight" in decayed
    assert any(n.endswith(".bias") for n in kept) and any(n.endswith("norm1.scale") for n in kept)
    # Every parameter exactly once; the tied head is the embedding, so it is not decayed twice.
    all_params = decay["params"] + no_decay["params"]
    assert len({id(p) for p in all_params}) == len(all_params) == len(list(model.parameters()))
    assert model.out_head.weight is model.tok_emb.weight


def test_untied_head_is_decayed():
    model = GPTModel(CFG.replace(tie_weights=False))
    decay, _ = param_groups(model, 0.1)
    assert any(p is model.out_head.weight for p in decay["params"])


def test_make_optimizer_uses_the_fused_kernel_and_matches_the_plain_adamw():
    torch.manual_seed(0)
    model = GPTModel(CFG.replace(drop_rate=0.0))  # no dropout: both models see the same function
    reference, start = copy.deepcopy(model), copy.deepcopy(model)
    fused = make_optimizer(model, 1e-2)
    plain = torch.optim.AdamW(param_groups(reference, 0.1), lr=1e-2, betas=(0.9, 0.99), foreach=False)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    ids = data(200)
    for step in range(5):
        x, y = get_batch(ids, 8, 4, generator=torch.Generator().manual_seed(step))
        for m, opt in ((model, fused), (reference, plain)):
            opt.zero_grad()
            calc_loss_batch(m, x, y).backward()
            opt.step()
    for (name, a), b in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
    assert not torch.equal(model.tok_emb.weight, start.tok_emb.weight)  # it did train


def test_make_optimizer_errors():
    with pytest.raises(ValueError, match="weight_decay must be a number >= 0"):
        param_groups(GPTModel(CFG), -1.0)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        make_optimizer(GPTModel(CFG), 0.0)


# --- losses --------------------------------------------------------------------------------------
def test_calc_loss_loader_weights_batches_by_size_and_respects_num_batches():
    model = GPTModel(CFG)
    ids = data(100)
    loader = create_dataloader(ids, 8, 8, batch_size=5, shuffle=False, drop_last=False)  # 12 windows
    batches = list(loader)
    model.eval()
    with torch.no_grad():
        total = sum(calc_loss_batch(model, x, y).item() * y.numel() for x, y in batches)
    n = sum(y.numel() for _, y in batches)
    model.train()
    assert calc_loss_loader(model, loader) == pytest.approx(total / n, rel=1e-5)
    with torch.no_grad():
        model.eval()
        first = calc_loss_batch(model, *batches[0]).item()
    model.train()
    assert calc_loss_loader(model, loader, num_batches=1) == pytest.approx(first, rel=1e-5)
    assert model.training  # mode restored
    assert split_loss(model, ids, 8, batch_size=5) == pytest.approx(total / n, rel=1e-5)
    with pytest.raises(ValueError, match="num_batches must be None"):
        calc_loss_loader(model, loader, num_batches=0)


# --- settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, match",
    [
        ({"max_iters": 0}, "max_iters must be a positive int"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"min_lr": 1.0}, "min_lr .* must not be larger than lr"),
        ({"warmup_iters": 5000}, "warmup_iters .* must not exceed max_iters"),
        ({"beta2": 1.0}, r"beta2 must be a number in \[0, 1\)"),
        ({"grad_clip": -1.0}, "grad_clip must be a number >= 0"),
        ({"batch_size": 2.5}, "batch_size must be a positive int, got 2.5"),
        ({"nonsense": 1}, "unknown training setting"),
    ],
)
def test_settings_are_checked(changes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainSettings().replace(**changes)


# --- the loop --------------------------------------------------------------------------------------
def fresh_model():
    torch.manual_seed(0)
    return GPTModel(CFG)


def test_train_history_layout_and_learning():
    model = fresh_model()
    settings = SETTINGS.replace(max_iters=60, eval_interval=20, eval_iters=4)
    state = train(model, data(), data(seed=1), settings, progress=False)
    h = state.history
    assert state.step == 60
    assert h["step"] == [0, 20, 40, 60]
    assert len(h["batch_loss"]) == len(h["lr"]) == 60
    assert h["lr"][:3] == pytest.approx([1e-2 / 3, 2e-2 / 3, 1e-2])
    assert h["lr"][-1] == pytest.approx(lr_at(59, 1e-2, 1e-3, 3, 60))
    assert h["val"][-1] < h["val"][0] - 0.3
    assert all(isinstance(v, int) for v in h["step"])
    assert all(isinstance(v, float) for key in h if key != "step" for v in h[key])
    assert not model.training


def test_models_without_cfg_need_a_block_size():
    from gptcourse.bigram import BigramLanguageModel

    with pytest.raises(ValueError, match="settings.block_size is needed"):
        train(BigramLanguageModel(7), data(), data(), SETTINGS, progress=False)
    state = train(BigramLanguageModel(7), data(), data(), SETTINGS.replace(block_size=8),
                  progress=False)
    assert state.history["val"][-1] < state.history["val"][0]


def test_gradient_clipping_caps_the_update():
    # With SGD-like clipping at a tiny norm, one step can hardly move the weights.
    moved = []
    for clip in (1e-6, 0.0):
        model = fresh_model()
        before = [p.detach().clone() for p in model.parameters()]
        train(model, data(), data(), SETTINGS.replace(max_iters=1, warmup_iters=0, grad_clip=clip),
              progress=False)
        moved.append(sum((p - b).abs().sum().item() for p, b in zip(model.parameters(), before)))
    assert moved[0] < moved[1]


def test_checkpoint_callback_schedule():
    seen = []
    train(fresh_model(), data(), data(), SETTINGS, checkpoint_every=5,
          on_checkpoint=lambda s: seen.append(s.step), progress=False)
    assert seen == [5, 10, 12]


def test_resume_gives_the_same_run(tmp_path):
    """An interrupted run, resumed from its checkpoint, matches an uninterrupted one exactly."""
    tr, va = data(), data(seed=1)
    whole_model = fresh_model()
    whole = train(whole_model, tr, va, SETTINGS, progress=False)

    class Crash(Exception):
        pass

    path = tmp_path / "ckpt.pt"
    model = fresh_model()

    def save_then_crash(state):
        save_checkpoint(path, model, state, settings=SETTINGS)
        if state.step == 7:
            raise Crash

    with pytest.raises(Crash):
        train(model, tr, va, SETTINGS, checkpoint_every=7, on_checkpoint=save_then_crash,
              progress=False)
    torch.manual_seed(12345)  # a new process would start from other random states
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 7
    resumed_model = load_model_state(GPTModel(config_of(ckpt)), ckpt)
    state = restore_state(ckpt, resumed_model, TrainSettings(**ckpt["settings"]))
    resumed = train(resumed_model, tr, va, SETTINGS, state=state, progress=False)
    assert resumed.history == whole.history
    for a, b in zip(resumed_model.state_dict().values(), whole_model.state_dict().values()):
        assert torch.equal(a, b)


# --- devices -------------------------------------------------------------------------------------
def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device name"):
        pick_device("gpu")
    with pytest.raises(TypeError, match="device must be a string"):
        pick_device(3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_pick_device_explains_missing_cuda():
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        pick_device("cuda")


def test_autocast_is_off_on_cpu():
    with autocast("cpu"):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda_uses_bf16_autocast():
    model = fresh_model()
    state = train(model, data(), data(), SETTINGS.replace(max_iters=3), device="cuda",
                  progress=False)
    assert next(model.parameters()).device.type == "cuda"
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32
    assert math.isfinite(state.history["val"][-1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cpu_checkpoint_resumes_on_cuda(tmp_path):
    model = fresh_model()
    state = train(model, data(), data(), SETTINGS.replace(max_iters=4), progress=False)
    save_checkpoint(tmp_path / "c.pt", model, state, settings=SETTINGS)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    gpu_model = load_model_state(GPTModel(config_of(ckpt)), ckpt).to("cuda")
    restored = restore_state(ckpt, gpu_model, SETTINGS)  # fused AdamW on CUDA
    resumed = train(gpu_model, data(), data(), SETTINGS, state=restored, device="cuda",
                    progress=False)
    assert resumed.step == SETTINGS.max_iters and math.isfinite(resumed.history["val"][-1])


# --- torch.compile (opt-in) ----------------------------------------------------------------------
def _has_cxx_compiler() -> bool:
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _has_cxx_compiler(), reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_training_takes_the_same_steps_as_eager():
    # No dropout: compiled code draws its random numbers differently.
    settings = SETTINGS.replace(max_iters=4, eval_interval=10)
    models, losses = {}, {}
    for compiled in (False, True):
        torch.manual_seed(0)
        models[compiled] = GPTModel(CFG.replace(drop_rate=0.0, fast=True))
        state = train(models[compiled], data(), data(seed=1), settings, progress=False,
                      compile_model=compiled)
        losses[compiled] = state.history["batch_loss"]
    eager, compiled = models[False], models[True]
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    for (name, a), b in zip(compiled.state_dict().items(), eager.state_dict().values()):
        assert not name.startswith("_orig_mod")  # the model itself was not wrapped
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_failed_compile_is_one_clear_error_and_leaves_the_weights(monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InvalidCxxCompiler

    def broken(*args):  # what torch.compile returns without a C++ compiler: it fails when called
        raise BackendCompilerFailed(broken, InvalidCxxCompiler(), None)

    monkeypatch.setattr(torch, "compile", lambda module: broken)
    model = fresh_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CompileError, match=r"InvalidCxxCompiler: No working C\+\+ compiler.*"
                                           r"needs a working C\+\+ compiler.*drop --compile"):
        train(model, data(), data(), SETTINGS, progress=False, compile_model=True)
    for a, b in zip(model.state_dict().values(), before.values()):
        assert torch.equal(a, b)


def test_a_python_that_torch_compile_does_not_support_is_one_clear_error(monkeypatch):
    def unsupported(module):
        raise RuntimeError("torch.compile is not supported on Python 3.99+")

    monkeypatch.setattr(torch, "compile", unsupported)
    with pytest.raises(CompileError, match=r"not available here \(torch.compile is not supported on "
                                           r"Python 3.99\+\); train without compiling"):
        train(fresh_model(), data(), data(), SETTINGS, progress=False, compile_model=True)


def test_compile_model_must_be_a_flag():
    with pytest.raises(TypeError, match="compile_model"):
        train(fresh_model(), data(), data(), SETTINGS, progress=False, compile_model="yes")
    with pytest.raises(TypeError, match="compile_fallback"):
        train(fresh_model(), data(), data(), SETTINGS, progress=False, compile_fallback=1)


def _broken_compile():
    """What torch.compile gives without a C++ compiler: a module that fails when first called."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InvalidCxxCompiler

    calls = []

    def broken(*args):
        calls.append(1)
        raise BackendCompilerFailed(broken, InvalidCxxCompiler(), None)
    return broken, calls


@pytest.mark.parametrize("where", ["first call", "torch.compile"])
def test_compile_fallback_warns_once_and_trains_exactly_the_eager_steps(monkeypatch, where):
    """Where compiling fails (on the first step, or at once), the same run goes on uncompiled."""
    torch.manual_seed(0)
    eager = train(fresh_model(), data(), data(seed=1), SETTINGS, progress=False)
    broken, calls = _broken_compile()

    def unsupported(module):
        raise RuntimeError("torch.compile is not supported on Python 3.99+")
    monkeypatch.setattr(torch, "compile", (lambda module: broken) if where == "first call" else unsupported)
    torch.manual_seed(0)
    model = fresh_model()
    with pytest.warns(CourseWarning) as caught:
        state = train(model, data(), data(seed=1), SETTINGS, progress=False, compile_model=True,
                      compile_fallback=True)
    assert len(caught) == 1 and str(caught[0].message).endswith(": training without compiling")
    expected = ("InvalidCxxCompiler: No working C++ compiler" if where == "first call"
                else "not supported on Python 3.99+")
    assert expected in str(caught[0].message)
    assert calls == ([1] if where == "first call" else [])  # tried once, then never again
    assert state.history == eager.history  # the same batches, losses and dropout masks


@pytest.mark.parametrize("flag, steps, compiles", [
    (None, COMPILE_PAYS_BACK_FROM - 1, False), (None, COMPILE_PAYS_BACK_FROM, True),
    (None, 10 * COMPILE_PAYS_BACK_FROM, True), (True, 1, True), (False, 10 * COMPILE_PAYS_BACK_FROM, False),
])
def test_choose_compile_compiles_long_runs_unless_a_flag_decides(flag, steps, compiles):
    chosen, why = choose_compile(flag, steps)
    assert chosen is compiles
    if flag is None:
        assert f"{steps} steps to go" in why and str(COMPILE_PAYS_BACK_FROM) in why
        assert ("--no-compile to refuse" if compiles else "--compile to force") in why
    else:
        assert why == ("--compile" if flag else "--no-compile")
