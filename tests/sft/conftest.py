"""Tiny random Llama models with a ChatML tokenizer, built in the test and saved like a real checkpoint."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ["good", "great", "bad", "awful", "film", "movie", "plot", "the", "a", "was", "is", "very", "review",
         "fresh", "rotten", "answer", "what", "say", "hello", "world", "yes", "no"]


def make_chat_tokenizer(directory: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(random.Random(i).sample(WORDS, 6)) + ".\n" for i in range(200)]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHATML
    fast.save_pretrained(directory)
    return fast


def make_tiny_llama(directory: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A 2-layer, width-32 LlamaForCausalLM with grouped-query attention (4 query heads, 2 key/value heads)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tok = make_chat_tokenizer(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Prompt/response rows: the answer follows from the words of the prompt."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        words = rng.sample(["the", "film", "plot", "was", "very", "movie"], 3) + [rng.choice(
            ["good", "great"] if good else ["bad", "awful"])]
        rng.shuffle(words)
        rows.append({"prompt": "review: " + " ".join(words), "response": "fresh" if good else "rotten"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
