"""Tiny speech-recognition fixtures built in the test: a random Whisper (the real architecture, 2+1 layers, width 32)
with a small byte-level BPE tokenizer carrying Whisper's special tokens, and folders of tone clips whose transcript
names the tone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TONES = {"low tone": 300.0, "high tone": 1800.0}
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]
CORPUS = ["low tone", "high tone", "the quick brown fox jumps over the lazy dog", "hello world", "doctor smith"]


def make_tiny_tokenizer(directory: Path):
    """A byte-level BPE (~300 tokens) and the special tokens Whisper's decoding needs, saved as tokenizer.json
    (as the converted tiny.en is): transformers reads it as a WhisperTokenizer through the model's config."""
    from tokenizers import ByteLevelBPETokenizer

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" " + c for c in CORPUS] * 5, vocab_size=300, min_frequency=1, show_progress=False)
    bpe.add_special_tokens(SPECIALS)  # at the end of the vocabulary, <|notimestamps|> last, as in Whisper's:
    # transformers' ASR pipeline reads every id above <|notimestamps|> as a timestamp
    bpe.save(str(directory / "tokenizer.json"))
    return bpe


def make_tiny_asr_whisper(directory: Path, *, seed: int = 0, chunk_seconds: int = 2) -> Path:
    """A random WhisperForConditionalGeneration + its feature extractor and tokenizer, saved like a real checkpoint."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    tok = make_tiny_tokenizer(directory)
    sot, eot = tok.token_to_id("<|startoftranscript|>"), tok.token_to_id("<|endoftext|>")
    config = WhisperConfig(vocab_size=tok.get_vocab_size(), num_mel_bins=80, d_model=32, encoder_layers=2,
                           decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=64, decoder_ffn_dim=64,
                           max_source_positions=50 * chunk_seconds, max_target_positions=64, pad_token_id=eot,
                           bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot, suppress_tokens=[],
                           begin_suppress_tokens=[])
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(config).save_pretrained(directory)
    WhisperFeatureExtractor(chunk_length=chunk_seconds).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_asr(tmp_path_factory) -> Path:
    return make_tiny_asr_whisper(tmp_path_factory.mktemp("tiny-asr-whisper"))


def tone(freq: float, rng: np.random.Generator, rate: int = 16000, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * (1 + rng.uniform(-0.05, 0.05)) * t)
    return (wave + rng.normal(0, 0.01, t.shape)).astype(np.float32)


def write_speech_folder(root: Path, n_per_class: int = 8, seed: int = 0, rate: int = 16000,
                        sidecar: str = ".txt") -> Path:
    """root/<n>.wav with root/<n>.txt (or .lab) holding "low tone" / "high tone"."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n_per_class):
        for text, freq in TONES.items():
            stem = f"{text.split()[0]}-{k:03d}"
            sf.write(root / f"{stem}.wav", tone(freq, rng, rate), rate)
            (root / f"{stem}{sidecar}").write_text(text + "\n")
    return root


def asr_recipe(model: Path, train: str, out: Path, **task) -> dict:
    return {"model": {"path": str(model)},
            "task": {"type": "speech-recognition", "decoding": {"num_beams": 2, "max_new_tokens": 8}, **task},
            "data": {"train": train, "test_fraction": 0.25, "eval_fraction": 0.2},
            "train": {"epochs": 25, "lr": 1e-2, "batch_size": 4, "seed": 0, "threads": 1, "precision": "fp32",
                      "log_every": 5},
            "eval": {"bootstrap_samples": 50, "latency": False, "report": False},
            "output": {"dir": str(out)}}
