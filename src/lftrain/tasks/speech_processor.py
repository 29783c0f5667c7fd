"""Whisper's processor for speech recognition: the feature extractor at the run's window and the tokenizer with
its forced prefix, saved together with the model; and loading a Whisper model safely."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lftrain.errors import InputError, ModelLoadError
from lftrain.tasks.audio_processor import AudioProcessor

# ---- the processor: features + tokenizer ------------------------------------------------------------------

class SpeechProcessor:
    """Whisper's feature extractor (set to the run's window) and tokenizer, saved together with the model."""

    def __init__(self, features: AudioProcessor, tokenizer, language: str | None = None) -> None:
        self.features, self.tokenizer = features, tokenizer
        # saved as a whole number: transformers' extractor derives its sample count from it when it is reloaded
        features.extractor.chunk_length = int(round(features.n_samples / features.rate))
        # Whisper's control tokens (<|startoftranscript|>, <|notimestamps|>, languages...) must be known as special,
        # or decoding keeps them (a tokenizer.json alone, as CTranslate2 ships it, marks only <|endoftext|>)
        control = [t for t in tokenizer.get_added_vocab() if re.fullmatch(r"<\|[a-z_-]+\|>", t)]
        missing = [t for t in control if tokenizer.convert_tokens_to_ids(t) not in tokenizer.all_special_ids]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": control})
        multilingual = "<|en|>" in tokenizer.get_vocab() and "<|translate|>" in tokenizer.get_vocab() and \
            len(tokenizer) > 51864
        if multilingual:
            tokenizer.set_prefix_tokens(language=language or "en", task="transcribe", predict_timestamps=False)
        else:
            tokenizer.set_prefix_tokens(predict_timestamps=False)
        self.language = (language or "en") if multilingual else None
        self.prefix = list(tokenizer.prefix_tokens)  # <|startoftranscript|> [lang task] <|notimestamps|>
        self.eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        if tokenizer.pad_token is None:  # as Hugging Face's Whisper tokenizers have it (padding label batches)
            tokenizer.pad_token = "<|endoftext|>"
        self.pad_token_id = self.eos  # padded decoder inputs are never attended to by a real position (causal)

    @classmethod
    def from_dir(cls, path: Path, window_seconds: float | None, language: str | None = None) -> SpeechProcessor:
        from transformers import AutoTokenizer

        features = AudioProcessor.from_dir(path, window_seconds)
        if not features.whisper:
            raise ModelLoadError(f"{path}: task.type speech-recognition needs a Whisper model (its feature extractor "
                                 f"is {type(features.extractor).__name__})")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: no usable Whisper tokenizer (tokenizer.json or vocab.json + merges.txt): "
                                 f"{exc}") from None
        return cls(features, tokenizer, language)

    def label_ids(self, text: str) -> list[int]:
        """Forced prefix + the text's tokens + end of text (the text with one leading space, as Whisper writes)."""
        return self.prefix + self.tokenizer.encode(" " + text.strip(), add_special_tokens=False) + [self.eos]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def references(self, encoded: dict[str, np.ndarray], n: int) -> list[str]:
        """The transcripts of the first `n` encoded rows, back from their tokens."""
        off = encoded["offsets"]
        return [self.decode(encoded["ids"][off[i] + encoded["prefix"][i]: off[i + 1] - 1]) for i in range(n)]

    def configure_generation(self, model) -> None:
        """What `generate` (ours and transformers' pipeline) needs to decode as training taught: the forced
        prefix and the end token, written into the model's generation config (saved with it)."""
        gc = model.generation_config
        gc._from_model_config = False  # else transformers rebuilds it from config.json on loading, losing these
        gc.decoder_start_token_id = self.prefix[0]
        gc.eos_token_id = gc.pad_token_id = self.eos
        gc.no_timestamps_token_id = self.tokenizer.convert_tokens_to_ids("<|notimestamps|>")
        gc.return_timestamps = False
        if self.language:
            gc.is_multilingual, gc.language, gc.task = True, self.language, "transcribe"
            gc.lang_to_id = gc.lang_to_id or {f"<|{self.language}|>": self.prefix[1]}
            gc.task_to_id = gc.task_to_id or {"transcribe": self.prefix[2]}
        else:
            gc.is_multilingual = False

    def save_pretrained(self, path: str | Path) -> None:
        self.features.save_pretrained(path)
        self.tokenizer.save_pretrained(str(path))


def load_whisper(source, attention: str = "eager"):
    """`WhisperForConditionalGeneration` from a vetted source (safetensors, no remote code), in its dtype."""
    from transformers import WhisperForConditionalGeneration

    from lftrain.models.loading import load_kwargs

    path = source.path
    try:
        return WhisperForConditionalGeneration.from_pretrained(path, attn_implementation=attention,
                                                               **{**load_kwargs(source, False),
                                                                  "use_safetensors": True})
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot load as a Whisper model (WhisperForConditionalGeneration): {exc}") from None
