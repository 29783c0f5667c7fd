"""Tiny random models of the families users bring, each with a tokenizer of its family's kind (byte-level BPE,
SentencePiece-style unigram, WordPiece, ESM's residues), saved with `save_pretrained` like a real checkpoint and
loaded back through the user's path. Nothing is downloaded."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE

WORDS = sorted(set(POSITIVE + NEGATIVE + NEUTRAL + ["what", "was", "good", "?", "review", "fresh", "rotten"]))
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
         "max_position_embeddings": 160}
ENCODERS = ["roberta", "deberta-v2", "xlm-roberta", "modernbert", "electra"]
DECODERS = ["llama3", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Gemma's shape: no system role (its template raises on one), <start_of_turn>/<end_of_turn> markers
GEMMA = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
         "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def corpus() -> list[str]:
    return [" ".join(random.Random(i).sample(WORDS, 8)) for i in range(400)]


def byte_bpe(specials: list[str], size: int = 500) -> tuple[dict, list]:
    """(vocab, merges) of a byte-level BPE trained on the toy words, `specials` first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=size, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]


def unigram(specials: list[str]) -> list[tuple[str, float]]:
    """A SentencePiece-style unigram vocabulary (pieces with log-probabilities), `specials` first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(corpus(), trainers.UnigramTrainer(vocab_size=150, special_tokens=specials,
                                                              unk_token=specials[3]))
    return [tuple(x) for x in json.loads(tok.to_str())["model"]["vocab"]]


def encoder_tokenizer(family: str):
    import transformers as T
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    if family == "roberta":
        vocab, merges = byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        return T.RobertaTokenizer(vocab=vocab, merges=merges)
    if family == "xlm-roberta":
        return T.XLMRobertaTokenizer(vocab=unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    if family == "deberta-v2":
        return T.DebertaV2Tokenizer(vocab=unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]))
    if family == "electra":
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz.,!?'"]
        return T.ElectraTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(words))})
    assert family == "modernbert"  # byte-level BPE with [CLS]/[SEP], no token types, as ModernBERT ships it
    vocab, merges = byte_bpe(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                     pad_token="[PAD]", mask_token="[MASK]",
                                     model_input_names=["input_ids", "attention_mask"])


def encoder_config(family: str, tok):
    import transformers as T

    ids = {"pad_token_id": tok.pad_token_id}
    if family in ("roberta", "xlm-roberta"):
        cls = T.RobertaConfig if family == "roberta" else T.XLMRobertaConfig
        return cls(vocab_size=len(tok), type_vocab_size=1, bos_token_id=tok.cls_token_id,
                   eos_token_id=tok.sep_token_id, **ids, **SMALL)
    if family == "deberta-v2":
        return T.DebertaV2Config(vocab_size=len(tok), relative_attention=True, position_buckets=16,
                                 pos_att_type=["p2c", "c2p"], type_vocab_size=0, position_biased_input=False,
                                 **ids, **SMALL)
    if family == "electra":
        return T.ElectraConfig(vocab_size=len(tok), embedding_size=16, **ids, **SMALL)
    return T.ModernBertConfig(vocab_size=len(tok), cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                              bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, local_attention=16,
                              global_attn_every_n_layers=2, **ids, **SMALL)


def make_encoder(family: str, directory: Path, seed: int = 0) -> Path:
    """A tiny random `family` encoder without a task head, like a pre-trained checkpoint."""
    import torch
    from transformers import AutoModel

    tok = encoder_tokenizer(family)
    tok.save_pretrained(directory)
    torch.manual_seed(seed)
    config = encoder_config(family, tok)
    config.initializer_range = 0.1  # a tiny model learns the toy tasks in a few steps whatever the CPU's rounding
    AutoModel.from_config(config).save_pretrained(directory)
    return directory


ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]


def make_esm(directory: Path, seed: int = 0) -> Path:
    """A tiny random ESM-2 (its real 33-residue vocabulary, rotary positions)."""
    import torch
    from transformers import EsmConfig, EsmModel, EsmTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(ESM_VOCAB) + "\n")
    tok = EsmTokenizer(str(directory / "vocab.txt"))
    tok.save_pretrained(directory)
    torch.manual_seed(seed)
    config = EsmConfig(vocab_size=len(ESM_VOCAB), pad_token_id=1, mask_token_id=32, cls_token_id=0, eos_token_id=2,
                       position_embedding_type="rotary", token_dropout=True, emb_layer_norm_before=False,
                       initializer_range=0.1, **SMALL)
    EsmModel(config).save_pretrained(directory)
    return directory


def sentencepiece_bpe(specials: list[str], prefix_space: bool):
    """A SentencePiece BPE tokenizer as Hugging Face converts one (Llama 2, Mistral, Phi-3 with a `▁` put before
    the text; Gemma without): `▁` for spaces, byte-fallback pieces <0x00>..<0xFF>, `specials` first."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    trainer = Tokenizer(models.BPE())
    trainer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    trainer.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
    learnt = json.loads(trainer.to_str())["model"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [p for p, _ in sorted(learnt["vocab"].items(), key=lambda kv: kv[1]) if p not in specials]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in learnt["merges"]]
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merges, byte_fallback=True,
                               unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence(([normalizers.Prepend("\u2581")] if prefix_space else []) +
                                          [normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()] +
                                    ([decoders.Strip(" ", 1, 0)] if prefix_space else []))
    return tok


def decoder_tokenizer(family: str):
    """The family's tokenizer kind (byte-level BPE: Llama 3, Qwen; SentencePiece BPE: Mistral, Phi-3, Gemma) with
    its chat markers. llama3 and mistral ship no pad token, as the real ones."""
    from transformers import PreTrainedTokenizerFast

    if family.startswith("gemma"):
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
        eos, template = "<end_of_turn>", GEMMA
    elif family in ("mistral", "phi3"):
        specials, eos, template = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"], "<|im_end|>", CHATML
    else:
        specials, eos, template = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|im_end|>", CHATML
    if family in ("mistral", "phi3") or family.startswith("gemma"):
        tok = sentencepiece_bpe(specials, prefix_space=not family.startswith("gemma"))
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        vocab, merges = byte_bpe(specials, size=400)
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    pad = None if family in ("llama3", "mistral") else specials[0]
    bos = "<bos>" if family.startswith("gemma") else "<s>" if "<s>" in specials else "<|im_start|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, bos_token=bos,
                                   unk_token="<unk>" if "<unk>" in specials else None,
                                   model_input_names=["input_ids", "attention_mask"])
    fast.chat_template = template
    return fast


def decoder_config(family: str, tok):
    import transformers as T

    small = {**SMALL, "num_key_value_heads": 2, "vocab_size": len(tok), "eos_token_id": tok.eos_token_id,
             "bos_token_id": tok.bos_token_id, "pad_token_id": tok.pad_token_id, "tie_word_embeddings": True}
    if family == "llama3":
        return T.LlamaConfig(**small)
    if family == "qwen2":
        return T.Qwen2Config(**small)
    if family == "qwen3":
        return T.Qwen3Config(head_dim=8, **small)
    if family == "mistral":
        return T.MistralConfig(sliding_window=None, **small)
    if family == "gemma2":
        return T.Gemma2Config(head_dim=8, query_pre_attn_scalar=8, sliding_window=16, **small)  # as the real ones
    if family == "gemma3":
        return T.Gemma3TextConfig(head_dim=8, query_pre_attn_scalar=8, sliding_window=16, **small)
    assert family == "phi3"
    return T.Phi3Config(**small)


def make_decoder(family: str, directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    tok = decoder_tokenizer(family)
    tok.save_pretrained(directory)
    torch.manual_seed(seed)
    config = decoder_config(family, tok)
    config.initializer_range = 0.1
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """family name -> a lazily built model directory (each built once a session)."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            d = tmp_path_factory.mktemp(family)
            built[family] = (make_esm(d) if family == "esm" else
                             make_decoder(family, d) if family in DECODERS else make_encoder(family, d))
        return built[family]
    return get
