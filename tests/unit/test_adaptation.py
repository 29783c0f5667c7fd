"""Adaptations on tiny models: which parameters train, errors that say what to change, peft adapters,
the frozen-prefix convention, and checkpoint/resume of peft-wrapped models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lftrain.config import load_recipe
from lftrain.errors import InputError, RecipeError
from lftrain.models.adaptation import build_adaptation
from lftrain.models.layers import find_layers, unwrap
from tests.conftest import make_tokenizer, toy_rows


def frozen_prefix_layers(model) -> int:
    """How many stages at the bottom of the network have no trainable parameter, counting the embeddings
    as stage 0 and block i as stage i + 1.

    0: the embeddings train (nothing at the bottom is frozen); 1: the embeddings are frozen, block 0 trains;
    1 + k: the embeddings and blocks 0..k-1 are frozen, so the hidden states entering block k (the output of
    `layers[k - 1]`) are a fixed function of the input — cacheable if those stages are also deterministic
    (no active dropout). Returns 0 when the layer stack cannot be found."""
    stack = find_layers(model)
    if stack is None or any(p.requires_grad for p in stack.embeddings):
        return 0
    n = 1
    for layer in stack.layers:
        if any(p.requires_grad for p in layer.parameters()):
            break
        n += 1
    return n


def classifier(model_dir, num_labels: int = 2):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels,
                                                              attn_implementation="eager")


def adapt(model, **section):
    recipe = load_recipe(data={"model": {"path": "m"}, "data": {"train": "x.csv"}, "adaptation": section})
    return build_adaptation(recipe.adaptation).apply(model)


def trainable(model) -> set[str]:
    return {n for n, p in unwrap(model).named_parameters() if p.requires_grad}


def tiny_llama():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, num_labels=2)
    return LlamaForSequenceClassification(config)


# ---- freeze -----------------------------------------------------------------------------------------------

def test_freeze_bottom_layers_freezes_embeddings_and_those_layers(tiny_bert):
    model = adapt(classifier(tiny_bert), type="freeze", bottom_layers=1)
    names = trainable(model)
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in names)
    assert any(n.startswith("bert.encoder.layer.1.") for n in names)
    assert {"bert.pooler.dense.weight", "classifier.weight", "classifier.bias"} <= names
    assert frozen_prefix_layers(model) == 2  # embeddings (stage 0) and layer 0 (stage 1)


def test_top_layers_is_the_complement_of_bottom_layers(tiny_bert):
    assert trainable(adapt(classifier(tiny_bert), type="freeze", top_layers=1)) == \
        trainable(adapt(classifier(tiny_bert), type="freeze", bottom_layers=1))
    probe = adapt(classifier(tiny_bert), type="freeze", top_layers=0)  # a linear probe: head and pooler only
    assert trainable(probe) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
                                "classifier.bias"}
    assert frozen_prefix_layers(probe) == 3


def test_embeddings_flag(tiny_bert):
    model = adapt(classifier(tiny_bert), type="freeze", bottom_layers=1, embeddings=False)
    names = trainable(model)
    assert "bert.embeddings.word_embeddings.weight" in names
    assert not any(n.startswith("bert.encoder.layer.0.") for n in names)
    assert frozen_prefix_layers(model) == 0  # the input stage trains, so nothing at the bottom is fixed
    only_embeddings = adapt(classifier(tiny_bert), type="freeze")
    assert not any(n.startswith("bert.embeddings.") for n in trainable(only_embeddings))
    assert frozen_prefix_layers(only_embeddings) == 1


def test_patterns_freeze_by_name_but_never_the_head(tiny_bert):
    model = adapt(classifier(tiny_bert), type="freeze", embeddings=False, patterns=[r"attention\.", "classifier"])
    names = trainable(model)
    assert not any("attention." in n for n in names)
    assert "bert.encoder.layer.0.intermediate.dense.weight" in names
    assert {"classifier.weight", "classifier.bias"} <= names


def test_freeze_errors_name_the_key_and_the_fix(tiny_bert):
    with pytest.raises(InputError, match=r"adaptation.bottom_layers is 3, but BertForSequenceClassification has 2 "
                                         r"layers \(base_model.encoder.layer\); use at most 2"):
        adapt(classifier(tiny_bert), type="freeze", bottom_layers=3)
    with pytest.raises(InputError, match="adaptation.top_layers is 5"):
        adapt(classifier(tiny_bert), type="freeze", top_layers=5)
    with pytest.raises(InputError, match=r"adaptation.patterns: 'nope' matches no parameter \(names look like bert"):
        adapt(classifier(tiny_bert), type="freeze", patterns=["nope"])
    with pytest.raises(RecipeError, match="either bottom_layers .* or top_layers"):
        adapt(classifier(tiny_bert), type="freeze", bottom_layers=1, top_layers=1)
    with pytest.raises(RecipeError, match="not a valid regular expression"):
        adapt(classifier(tiny_bert), type="freeze", patterns=["("])
    with pytest.raises(RecipeError, match="nothing to freeze"):
        adapt(classifier(tiny_bert), type="freeze", embeddings=False)


def test_freeze_on_an_unknown_architecture_says_where_it_looked():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    with pytest.raises(InputError, match=r"cannot find the layer stack of Sequential \(looked for "
                                         r"base_model.encoder.layer, .*\); freeze by name with adaptation.patterns"):
        adapt(model, type="freeze", bottom_layers=1)
    assert frozen_prefix_layers(model) == 0  # the helper never raises: caching simply stays off
    adapt(model, type="freeze", embeddings=False, patterns=[r"^0\."])  # by name it works anywhere
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]


def test_freeze_finds_decoder_layers_too():
    model = adapt(tiny_llama(), type="freeze", bottom_layers=2)
    stack = find_layers(model)
    assert stack.path == "layers" and len(stack.layers) == 3
    names = trainable(model)
    assert not any(n.startswith(("model.embed_tokens.", "model.layers.0.", "model.layers.1.")) for n in names)
    assert {"model.norm.weight", "score.weight"} <= names and any(n.startswith("model.layers.2.") for n in names)
    assert frozen_prefix_layers(model) == 3


def test_tied_head_cannot_lose_its_embeddings(tiny_bert):
    from transformers import BertForMaskedLM

    with pytest.raises(InputError, match="tied weights.*set adaptation.embeddings: false"):
        adapt(BertForMaskedLM.from_pretrained(tiny_bert), type="freeze", bottom_layers=1)


# ---- peft adapters --------------------------------------------------------------------------------------

def test_lora_trains_only_the_adapter_and_the_head(tiny_bert):
    model = adapt(classifier(tiny_bert), type="lora", r=4)
    names = trainable(model)
    lora = {n for n in names if "lora_" in n}
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora} == {"query", "value"}  # peft's BERT default
    assert names - lora == {"classifier.modules_to_save.default.weight", "classifier.modules_to_save.default.bias"}
    n_lora = sum(p.numel() for n, p in unwrap(model).named_parameters() if n in lora)
    assert n_lora == 2 * 2 * (32 * 4 + 4 * 32)  # layers x targets x (A + B)
    assert model.peft_config["default"].base_model_name_or_path == str(tiny_bert.resolve())
    assert frozen_prefix_layers(model) == 1  # embeddings frozen, every layer has adapter weights


def test_dora_adds_magnitudes_and_ia3_scales(tiny_bert):
    dora = trainable(adapt(classifier(tiny_bert), type="dora", r=2, target_modules=["value"]))
    assert any("lora_magnitude_vector" in n for n in dora)
    assert all(".value." in n or "classifier" in n for n in dora)
    ia3 = trainable(adapt(classifier(tiny_bert), type="ia3"))
    scaled = {n.split(".ia3_l")[0] for n in ia3 if "ia3_l" in n}
    assert {s.split("layer.0.", 1)[1] for s in scaled if "layer.0." in s} == \
        {"attention.self.key", "attention.self.value", "attention.output.dense", "output.dense"}  # peft's defaults
    assert {n for n in ia3 if "ia3_l" not in n} == {"classifier.modules_to_save.default.weight",
                                                    "classifier.modules_to_save.default.bias"}


def test_lora_default_targets_for_llama():
    model = adapt(tiny_llama(), type="lora")
    names = trainable(model)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names if "lora_" in n} == {"q_proj", "v_proj"}
    assert "score.modules_to_save.default.weight" in names


def test_adapter_target_errors_list_the_linear_layers(tiny_bert):
    with pytest.raises(InputError, match=r"adaptation.target_modules: no module named 'qurey' in "
                                         r"BertForSequenceClassification. Its Linear layers: dense, key, query, value"):
        adapt(classifier(tiny_bert), type="lora", target_modules=["qurey"])
    model = classifier(tiny_bert)
    model.config.model_type = "mystery"
    with pytest.raises(InputError, match="target_modules is not set and peft has no default for model type "
                                         "'mystery'.*Linear layers: dense, key, query, value"):
        adapt(model, type="lora")
    with pytest.raises(RecipeError, match="feedforward_modules"):
        adapt(classifier(tiny_bert), type="ia3", target_modules=["key"], feedforward_modules=["output.dense"])


def test_weights_missing_from_the_base_checkpoint_train_and_save_with_the_adapter(tmp_path):
    from transformers import BertConfig, BertModel

    tok = make_tokenizer(tmp_path)  # a base checkpoint without a pooler: BERT's pooler is then random at load
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    model = adapt(classifier(tmp_path), type="lora")
    assert "bert.pooler.dense" in model.peft_config["default"].modules_to_save
    assert "bert.pooler.dense.modules_to_save.default.weight" in trainable(model)


# ---- checkpoints of peft models ---------------------------------------------------------------------------

def _batch(tokenizer, seed: int):
    rows = toy_rows(8, seed=seed)
    enc = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")
    return dict(enc), torch.tensor([int(r["label"] == "pos") for r in rows])


def _steps(model, optimizer, scheduler, batches) -> None:
    model.train()
    for inputs, labels in batches:
        F.cross_entropy(model(**inputs).logits, labels).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def test_checkpoint_resume_of_a_lora_model_is_exact(tiny_bert, tmp_path):
    from transformers import AutoTokenizer

    from lftrain.training.checkpoint import TrainState, load_checkpoint, save_checkpoint

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    batches = [_batch(tok, seed) for seed in range(4)]

    def fresh(seed: int):
        torch.manual_seed(seed)
        model = adapt(classifier(tiny_bert), type="lora", r=4, dropout=0.2)  # dropout: RNG state matters too
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))

    torch.manual_seed(0)
    a, opt_a, sched_a = fresh(0)
    _steps(a, opt_a, sched_a, batches[:2])
    ckpt = save_checkpoint(tmp_path / "ckpt", a, opt_a, sched_a, TrainState(step=2))
    _steps(a, opt_a, sched_a, batches[2:])

    b, opt_b, sched_b = fresh(1)  # different adapter initialisation: everything must come from the checkpoint
    assert load_checkpoint(ckpt, b, opt_b, sched_b).step == 2
    _steps(b, opt_b, sched_b, batches[2:])
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name

