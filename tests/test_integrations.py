"""Trainer integrations: Hugging Face ``transformers.Trainer`` and ``accelerate.Accelerator``.

A tiny Llama built from a config (nothing downloaded) trains for a few steps with
``Trainer(optimizers=(opt, scheduler))``; where a reference optimizer exists, the same Trainer
run with it is the oracle (torch.optim.AdamW for AdamW, schedulefree's AdamWScheduleFree for
ours, whose ``train()``/``eval()`` Trainer calls around evaluation). The recipes are
docs/integrations.md. Optional: ``pip install -e '.[integrations]'``; the tests skip without it.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

import heavyball_chain as hc  # noqa: E402

SEQ, VOCAB, STEPS = 16, 64, 6


def tiny_llama(seed=0):
    """A 1-layer Llama without biases (a key bias has an exactly-zero gradient in exact arithmetic,
    which Adam turns into steps of the rounding noise's sign: no oracle can match those)."""
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=SEQ,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config)


def dataset(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)
    return [{"input_ids": x, "labels": x} for x in ids]


class ModeSpy(transformers.TrainerCallback):
    """Records, after each evaluation, whether the optimizer had its parameters in eval form."""

    def __init__(self):
        self.at_evaluate = []

    def on_evaluate(self, args, state, control, **kwargs):
        opt = kwargs["optimizer"]
        inner = getattr(opt, "optimizer", opt)  # accelerate's AcceleratedOptimizer wraps it
        self.at_evaluate.append(_in_eval_mode(inner) if callable(getattr(inner, "eval", None)) else None)


def _in_eval_mode(opt):
    if isinstance(opt, hc.ChainOptimizer):
        flags = [v for s in opt.state.values() for k, v in s.items() if k.endswith("train_mode")]
        return bool(flags) and not any(flags)
    return not opt.param_groups[0]["train_mode"]  # schedulefree's


def train_with_trainer(make_opt, tmp_path, evaluate=True):
    model = tiny_llama()
    opt = make_opt(model.parameters())
    sched = transformers.get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=STEPS)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=8, max_steps=STEPS,
        eval_strategy="steps" if evaluate else "no", eval_steps=3, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    spy = ModeSpy()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset(), eval_dataset=dataset(8, 2),
                                   optimizers=(opt, sched), callbacks=[spy])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    return model, opt, losses, evals, spy


def _max_diff(a, b):
    return max((x - y).abs().max().item() / y.abs().max().item() for x, y in zip(a.parameters(), b.parameters()))


def test_trainer_adamw_matches_torch_adamw(tmp_path):
    ours, opt, losses, evals, _ = train_with_trainer(lambda ps: hc.AdamW(ps, lr=3e-3, weight_decay=0.01), tmp_path)
    ref, _, ref_losses, _, _ = train_with_trainer(lambda ps: torch.optim.AdamW(ps, lr=3e-3, weight_decay=0.01),
                                                  tmp_path)
    assert len(losses) == STEPS and len(evals) == 2
    assert losses[-1] < losses[0]
    assert all(s["step"] == STEPS for s in opt.state.values())
    assert _max_diff(ours, ref) < 1e-5  # fp32 rounding over 6 steps (docs/presets.md: 1.8e-6 over 50)
    assert losses == pytest.approx(ref_losses, rel=1e-5)


def test_trainer_schedule_free_switches_modes_around_evaluation(tmp_path):
    """Trainer calls optimizer.eval() before evaluating and train() before the next step: the
    evaluation sees x, training y, as with schedulefree's optimizer, which our drop-in matches."""
    schedulefree = pytest.importorskip("schedulefree")
    ours, opt, losses, evals, spy = train_with_trainer(lambda ps: hc.AdamWScheduleFree(ps, lr=3e-3, warmup_steps=2),
                                                       tmp_path)
    ref, _, ref_losses, ref_evals, ref_spy = train_with_trainer(
        lambda ps: schedulefree.AdamWScheduleFree(ps, lr=3e-3, warmup_steps=2), tmp_path)
    assert spy.at_evaluate == [True, True] == ref_spy.at_evaluate
    assert _in_eval_mode(opt)  # the run ended with an evaluation: the parameters hold x, ready to save
    assert evals == pytest.approx(ref_evals, rel=1e-5)
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    assert _max_diff(ours, ref) < 1e-5


def test_trainer_soap_trains(tmp_path):
    """No reference runs under Trainer here (the SOAP reference is not installable): it trains, and
    its state belongs to every parameter."""
    model, opt, losses, evals, _ = train_with_trainer(
        lambda ps: hc.PrecondSchedulePaLMForeachSOAP(ps, lr=3e-3), tmp_path, evaluate=False)
    assert len(losses) == STEPS and losses[-1] < losses[0]
    assert len(opt.state) == len(list(model.parameters()))


@pytest.mark.parametrize("preset", ["ForeachLaProp", "ForeachSFAdamW"])
def test_accelerate_prepare_steps_as_the_plain_loop(preset):
    """Accelerator.prepare wraps the optimizer (AcceleratedOptimizer) and the scheduler; the steps
    equal a plain loop's bit for bit, and train()/eval() reach the schedule-free transform."""
    def loop(use_accelerate):
        model = tiny_llama()
        opt = getattr(hc, preset)(model.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        loader = torch.utils.data.DataLoader(dataset(), batch_size=4)
        if use_accelerate:
            acc = accelerate.Accelerator(cpu=True)
            model, opt, loader, sched = acc.prepare(model, opt, loader, sched)
        for batch in loader:
            loss = model(**batch).loss
            acc.backward(loss) if use_accelerate else loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
        opt.eval()
        return model

    plain, prepared = loop(False), loop(True)
    for a, b in zip(plain.parameters(), prepared.parameters()):
        assert torch.equal(a, b)
