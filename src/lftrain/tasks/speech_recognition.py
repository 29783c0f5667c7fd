"""Speech recognition: fine-tune Whisper (any `WhisperForConditionalGeneration`) on clips and their transcripts.

Clips are decoded once (data/audio.py, data/transcripts.py), resampled to 16 kHz and turned into log-mel frames by
the model's own feature extractor, padded to a fixed window (`task.window_seconds`; Whisper's is 30 s). A shorter
window cuts the encoder's position table to it, as audio classification does (5 s: 250 positions instead of 1500,
~6x less encoder work); the window is saved with the model, so `lft predict`, the export and transformers' own
pipeline all see the same input.

Targets are the transcript's tokens after Whisper's forced prefix: `<|startoftranscript|>` (the decoder's start
token, never a target), then `<|notimestamps|>` (for multilingual models also the language and task tokens), the
text, `<|endoftext|>`. Training is teacher forcing: the decoder reads the sequence shifted right and is scored on
every next token; rows of a batch are right-padded, the padded label positions are -100 and carry no loss; one
loss unit is one label token.

The final evaluation decodes every clip of `eval.splits` greedily and with beam search, scores WER and CER with
bootstrap intervals (evaluation/wer.py), times decoding per second of audio (real-time factor), and decodes the
same clips with the base model before fine-tuning (at the run's window and at the model's native window), with the
paired interval of the WER difference.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lftrain.config.base import Section
from lftrain.data.examples import Examples
from lftrain.errors import DataError
from lftrain.tasks.base import TASKS, Task
from lftrain.tasks.inputs import AudioInput
from lftrain.tasks.speech_processor import SpeechProcessor, load_whisper

log = logging.getLogger("lftrain")
IGNORE = -100
NATIVE_SECONDS = 30.0  # Whisper's own window


class DecodingConfig(Section):
    num_beams: int = Field(4, ge=1)
    """Beam width of the beam-search evaluation (greedy decoding is always scored too; 1 = greedy only)."""
    max_new_tokens: int = Field(128, gt=0)
    """Tokens generated per clip at most."""
    max_utterances: int = Field(1000, ge=1)
    """Clips decoded per evaluated split at most (the first N, in data order)."""
    samples: int = Field(5, ge=0)
    """Reference / transcript pairs shown in the metrics and printed."""
    compare_base: bool = True
    """Also decode the evaluated clips with the base model (before fine-tuning): its WER beside the fine-tuned."""
    base_native_window: bool = True
    """When `window_seconds` is shorter than the model's own window, also score the base model at its own (30 s)
    window, the way it is used zero-shot; the gain is reported against the better of the two base figures."""


@TASKS.register("speech-recognition")
class SpeechRecognition(Task):
    """Transcribe speech with a Whisper encoder-decoder. Loss: next-token cross-entropy on the transcript's tokens
    (teacher forcing); one loss unit per label token."""

    serve_input = AudioInput
    pipeline_tag = "automatic-speech-recognition"
    auto_model = "AutoModelForSpeechSeq2Seq"
    lower_is_better = frozenset({"loss", "wer", "cer"})

    generative = True
    default_metric = "loss"
    token_inputs = False
    cacheable = False  # decoded waveforms: features are re-made each run (seconds)
    requires = ("soundfile", "jiwer")

    class Config(Section):
        type: Literal["speech-recognition"] = "speech-recognition"
        audio: str = "audio"
        """Column holding the clip's path (relative to the table file) or bytes (CSV/JSONL/Parquet data). Folders
        need no columns: each clip has a `.txt`/`.lab` transcript beside it, or LibriSpeech's `*.trans.txt`."""
        text: str = "text"
        """Column holding the transcript (tables)."""
        window_seconds: int | None = Field(None, gt=0, le=30)
        """Every clip is padded with silence to this many seconds (after resampling to 16 kHz); the encoder's
        position table is cut to it. Default: the model's own (Whisper: 30 s). Whole seconds, as transformers'
        feature extractor needs them in the exported model. A clip longer than the window is an error (or dropped:
        `overlong`), never cut: words would be lost."""
        overlong: Literal["error", "drop"] = "error"
        """A clip longer than the window, or a transcript longer than `max_label_tokens`: stop with an error naming
        it, or drop it and count it."""
        max_label_tokens: int = Field(128, gt=2, le=448)
        """Tokens per transcript at most, forced prefix and end token included (Whisper's decoder holds 448)."""
        language: str | None = None
        """Language of the speech for multilingual Whisper models (e.g. `en`); English-only models ignore it."""
        normalizer: Literal["whisper-english", "basic", "none"] = "whisper-english"
        """How reference and hypothesis are normalised before WER/CER (evaluation/wer.py): Whisper's English
        normaliser, its language-independent basic one, or whitespace only."""
        spec_augment: bool = False
        """SpecAugment during training (Whisper's own masking of time steps and mel channels, as configured by
        `mask_time_prob` 0.05 and `mask_feature_prob` 0.05 here)."""
        wer_during_training: bool = True
        """Periodic evaluations also decode the eval split greedily and report its WER (else loss only)."""
        on_bad_file: Literal["error", "skip"] = "error"
        """A corrupt, empty or silent clip: stop with an error naming the file, or skip it and count it."""
        decoding: DecodingConfig = Field(default_factory=DecodingConfig)
        """Decoding in the final evaluation: beam width, length, the base model's comparison."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.augments_input = config.spec_augment

    # ---- data -------------------------------------------------------------------------------------------
    def read(self, path, data_cfg, *, with_labels: bool = True, drop_label=None, stats: dict | None = None,
             columns: dict[str, str] | None = None) -> Examples:
        """A folder of clips with transcripts (sidecars or LibriSpeech), a table, one clip or a list of clips."""
        from lftrain.data import audio, transcripts
        from lftrain.data.paths import resolve_path
        from lftrain.data.readers import is_saved_dataset, read_table

        skip = self.config.on_bad_file == "skip"
        p = None if isinstance(path, (list, tuple)) else resolve_path(str(path))
        if p is None:
            if with_labels:
                raise DataError("a list of clips has no transcripts; give a folder or a table", file=str(path[0]))
            rows, name = audio.read_files(list(path), skip_bad=skip), f"{len(path)} files"
        elif p.is_dir() and not is_saved_dataset(p):
            rows, name = transcripts.read_transcribed_folder(p, with_labels=with_labels, skip_bad=skip), str(path)
        elif p.is_file() and str(path).lower().endswith(audio.AUDIO_SUFFIXES):
            if with_labels:
                rows = transcripts.read_transcribed_folder(p.parent, with_labels=True, skip_bad=skip)
                keep = [i for i, w in enumerate(rows.where) if w[0] == str(p)]
                rows.waves, rows.rates = [rows.waves[i] for i in keep], [rows.rates[i] for i in keep]
                rows.labels, rows.where = [rows.labels[i] for i in keep], [rows.where[i] for i in keep]
            else:
                rows = audio.read_files([str(path)], skip_bad=skip)
            name = str(path)
        else:
            table = read_table(str(path), data_cfg.format, data_cfg.encoding).renamed(columns or {})
            if not table.rows:
                raise DataError("the file has a header but no rows", file=str(path))
            rows = transcripts.read_transcribed_table(table, resolve_path(str(path).split("#", 1)[0]).parent,
                                                      self.config.audio, self.config.text, with_labels=with_labels,
                                                      skip_bad=skip)
            name = str(path)
        if rows.bad:
            log.warning("%s: skipped %d unreadable or silent clips (task.on_bad_file: skip), e.g. %s", name,
                        len(rows.bad), rows.bad[0])
            if stats is not None:
                stats[f"{name}:bad_files_skipped"] = len(rows.bad)
        if not rows.waves:
            raise DataError("no readable clips", file=name)
        return Examples(name, {"audio": rows.waves, "rate": rows.rates, "text": rows.labels}, rows.where)

    def extract(self, table, *, normalize: bool, with_labels: bool = True, drop_label=None) -> Examples:
        from lftrain.data import transcripts

        rows = transcripts.read_transcribed_table(table, Path(table.file).parent, self.config.audio, self.config.text,
                                                  with_labels=with_labels,
                                                  skip_bad=self.config.on_bad_file == "skip")
        return Examples(table.file, {"audio": rows.waves, "rate": rows.rates, "text": rows.labels}, rows.where)

    @staticmethod
    def dedupe_key(ex: Examples, i: int) -> tuple:
        wave = ex.fields["audio"][i]
        return (ex.fields["rate"][i], hashlib.sha1(np.ascontiguousarray(wave).tobytes()).hexdigest())

    def fit_labels(self, train: Examples) -> None:
        return None

    def restore_labels(self, names: list[str]) -> None:
        return None  # no classes: Whisper's id2label is transformers' placeholder

    @staticmethod
    def row_info(ex: Examples, i: int) -> dict[str, Any]:
        return {"file": ex.where[i][0]}

    # ---- model ------------------------------------------------------------------------------------------
    def load_processor(self, source, trust_remote_code: bool = False) -> SpeechProcessor:
        return SpeechProcessor.from_dir(Path(source.path), self.config.window_seconds, self.config.language)

    def load_model(self, source, *, trust_remote_code: bool, attention: str):
        model = load_whisper(source, attention)
        processor = self.load_processor(source)
        frames = processor.features.frames
        if frames is not None and frames // 2 != model.config.max_source_positions:
            from lftrain.tasks.audio_classification import shorten_whisper_encoder

            shorten_whisper_encoder(model, frames // 2)
        processor.configure_generation(model)
        if self.config.spec_augment:
            model.config.apply_spec_augment = True
            model.config.mask_time_prob = model.config.mask_time_prob or 0.05
            model.config.mask_feature_prob = model.config.mask_feature_prob or 0.05
        return model

    # ---- batches ----------------------------------------------------------------------------------------
    def encode(self, processor: SpeechProcessor, ex: Examples) -> dict[str, np.ndarray]:
        """Log-mel features (N, mels, frames), the token sequences flat with offsets, the forced-prefix length per
        row, each clip's duration, and which example each encoded row came from."""
        from lftrain.data.audio import resample

        fx, cfg = processor.features, self.config
        waves, keep, seqs, seconds = [], [], [], []
        drops = {"audio": 0, "text": 0}
        texts = ex.fields.get("text") or [None] * len(ex)
        for i, (w, r, text) in enumerate(zip(ex.fields["audio"], ex.fields["rate"], texts)):
            w = resample(w, r, fx.rate)
            if len(w) > fx.n_samples:
                if cfg.overlong == "error":
                    raise DataError(f"clip is {len(w) / fx.rate:.2f} s long, longer than the {fx.n_samples / fx.rate:g}"
                                    " s window; raise task.window_seconds (at most 30) or set task.overlong: drop",
                                    file=ex.where[i][0], row=ex.where[i][1])
                drops["audio"] += 1
                continue
            ids = processor.label_ids(text) if text is not None else list(processor.prefix)
            if len(ids) > cfg.max_label_tokens:
                if cfg.overlong == "error":
                    raise DataError(f"transcript has {len(ids)} tokens, more than task.max_label_tokens="
                                    f"{cfg.max_label_tokens}", file=ex.where[i][0], row=ex.where[i][1])
                drops["text"] += 1
                continue
            waves.append(np.pad(w, (0, fx.n_samples - len(w))))
            seconds.append(len(w) / fx.rate)
            seqs.append(ids)
            keep.append(i)
        if any(drops.values()):
            log.info("%s: dropped %d clips longer than the window and %d transcripts longer than "
                     "task.max_label_tokens (task.overlong: drop)", ex.name, drops["audio"], drops["text"])
        if not keep:
            raise DataError(f"no clip of {ex.name} fits the window and task.max_label_tokens",
                            file=ex.where[0][0] if ex.where else None)
        lengths = [len(s) for s in seqs]
        return {"input_features": fx(waves), "ids": np.asarray([t for s in seqs for t in s], dtype=np.int64),
                "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                "prefix": np.full(len(seqs), len(processor.prefix), dtype=np.int64),
                "seconds": np.asarray(seconds, dtype=np.float32),
                "example_index": np.asarray(keep, dtype=np.int64)}

    @staticmethod
    def lengths(encoded: dict[str, np.ndarray]) -> np.ndarray:
        return np.diff(encoded["offsets"])  # tokens: batches of similar transcript length pad least

    @staticmethod
    def collate(encoded: dict[str, np.ndarray], indices: np.ndarray, pad_id: int) -> dict[str, Any]:
        """Features; decoder inputs = each sequence without its last token, right-padded with `pad_id`; labels = the
        sequence without its first (start) token, -100 where padded."""
        import torch

        starts, ends = encoded["offsets"][indices], encoded["offsets"][np.asarray(indices) + 1]
        width = int((ends - starts).max()) - 1
        inputs = np.full((len(indices), width), pad_id, dtype=np.int64)
        labels = np.full((len(indices), width), IGNORE, dtype=np.int64)
        for r, (a, b) in enumerate(zip(starts, ends)):
            seq = encoded["ids"][a:b]
            inputs[r, : len(seq) - 1] = seq[:-1]
            labels[r, : len(seq) - 1] = seq[1:]
        return {"input_features": torch.from_numpy(np.ascontiguousarray(encoded["input_features"][indices])),
                "decoder_input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}

    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        return {"input_features": batch["input_features"], "decoder_input_ids": batch["decoder_input_ids"]}

    @staticmethod
    def loss_units(batch: dict[str, Any]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    @staticmethod
    def loss_sum(outputs, batch: dict[str, Any]):
        import torch.nn.functional as F

        logits = outputs.logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                               ignore_index=IGNORE, reduction="sum")

    # ---- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, model, encoded, *, infer=None, batch_size: int, precision: str, device,
                 pad_id: int = 0) -> dict[str, float]:
        """Teacher-forced loss and token accuracy of the eval split; its greedy WER when `wer_during_training`."""
        from lftrain.tasks.asr_evaluation import teacher_forced_loss

        out = teacher_forced_loss(model, self, encoded, batch_size=batch_size, precision=precision, device=device,
                                  pad_id=pad_id)
        if self.config.wer_during_training and self.processor is not None:
            from lftrain.evaluation.wer import error_counts
            from lftrain.tasks.asr_evaluation import transcribe_encoded

            n = min(len(encoded["seconds"]), self.config.decoding.max_utterances)
            hyps, _ = transcribe_encoded(model, self.processor, encoded, n=n, num_beams=1,
                                         max_new_tokens=self.config.decoding.max_new_tokens, batch_size=batch_size,
                                         precision=precision, device=device)
            refs = self.processor.references(encoded, n)
            counts = error_counts(refs, hyps, self.config.normalizer)
            out.update(wer=counts.wer(), cer=counts.cer())
        return out

    processor: SpeechProcessor | None = None  # set by prepare_tokenizer: what decodes generated tokens

    def prepare_tokenizer(self, tokenizer) -> None:
        self.processor = tokenizer

    def final_evaluation(self, out) -> dict[str, dict[str, Any]]:
        from lftrain.tasks.asr_evaluation import final_evaluation

        return final_evaluation(self, out)

    # ---- inference on a finished run (lft predict / lft evaluate) ----------------------------------------
    def predict_rows(self, loaded, examples: Examples) -> list[dict[str, Any]]:
        """One row per clip, in input order: its file, transcript and duration."""
        from lftrain.tasks.asr_evaluation import transcribe_encoded

        encoded = self.encode(loaded.tokenizer, examples)
        hyps, _ = transcribe_encoded(loaded.model, loaded.tokenizer, encoded, n=len(encoded["seconds"]),
                                     num_beams=self.config.decoding.num_beams,
                                     max_new_tokens=self.config.decoding.max_new_tokens,
                                     batch_size=loaded.recipe.train.eval_batch_size, precision=loaded.precision,
                                     device=loaded.device)
        rows = []
        for k, i in enumerate(encoded["example_index"]):
            where = examples.where[int(i)]
            rows.append({"row": where[1], "file": where[0], "text": hyps[k],
                         "seconds": round(float(encoded["seconds"][k]), 3)})
        return rows

    def evaluate_rows(self, loaded, examples: Examples) -> dict[str, Any]:
        """WER/CER (greedy and beam) with intervals of a finished run on labelled clips."""
        from lftrain.tasks.asr_evaluation import decode_and_score

        encoded = self.encode(loaded.tokenizer, examples)
        ecfg = loaded.recipe.eval
        res = decode_and_score(loaded.model, self, loaded.tokenizer, encoded, samples=ecfg.bootstrap_samples,
                               level=ecfg.confidence, batch_size=loaded.recipe.train.eval_batch_size,
                               precision=loaded.precision, device=loaded.device)
        for key in ("_counts", "references", "transcripts", "beam_transcripts"):
            res.pop(key, None)
        return res

    def format_metrics(self, metrics: dict[str, Any], title: str) -> str:
        from lftrain.tasks.asr_evaluation import format_split

        return "\n".join([title, *format_split("data", metrics)])
