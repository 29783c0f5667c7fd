"""Speech recognition pieces on their own: label padding and masking against transformers' own shift, the text
normaliser, WER/CER on hand-counted cases, and reading clips with transcripts (errors name the file)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.asr.conftest import write_speech_folder


def _encoded(seqs: list[list[int]]) -> dict[str, np.ndarray]:
    lengths = [len(s) for s in seqs]
    return {"input_features": np.random.default_rng(0).normal(size=(len(seqs), 80, 200)).astype(np.float32),
            "ids": np.asarray([t for s in seqs for t in s], dtype=np.int64),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "prefix": np.full(len(seqs), 2), "seconds": np.ones(len(seqs), np.float32),
            "example_index": np.arange(len(seqs))}


def test_labels_are_shifted_padded_with_minus_100_and_match_transformers_own_loss(tiny_asr):
    import torch
    from transformers import WhisperForConditionalGeneration

    from lftrain.tasks.speech_recognition import SpeechRecognition

    eot, sot, nt = 300, 301, 302
    seqs = [[sot, nt, 10, 11, 12, eot], [sot, nt, 20, eot]]
    batch = SpeechRecognition.collate(_encoded(seqs), np.array([0, 1]), pad_id=eot)
    assert batch["decoder_input_ids"].tolist() == [[sot, nt, 10, 11, 12], [sot, nt, 20, eot, eot]]
    assert batch["labels"].tolist() == [[nt, 10, 11, 12, eot], [nt, 20, eot, -100, -100]]
    assert SpeechRecognition.loss_units(batch) == 8  # every label token, none of the padding

    model = WhisperForConditionalGeneration.from_pretrained(tiny_asr).eval()
    with torch.no_grad():
        ours = SpeechRecognition.loss_sum(model(**SpeechRecognition.model_inputs(batch)), batch) / 8
        # transformers builds the decoder inputs itself from the labels (shift right, -100 -> pad): same loss
        theirs = model(input_features=batch["input_features"], labels=batch["labels"]).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    padded = batch["labels"][1] == -100
    assert padded.sum() == 2  # and the loss ignores them: changing the padded decoder inputs changes nothing
    other = dict(batch, decoder_input_ids=batch["decoder_input_ids"].clone())
    other["decoder_input_ids"][1, 3:] = 7
    with torch.no_grad():
        again = SpeechRecognition.loss_sum(model(**SpeechRecognition.model_inputs(other)), other) / 8
    assert float(again) == pytest.approx(float(ours), rel=1e-6)


def test_processor_builds_whisper_targets(tiny_asr):
    from lftrain.tasks.speech_processor import SpeechProcessor

    p = SpeechProcessor.from_dir(tiny_asr, 1.0)
    ids = p.label_ids("  low tone ")
    assert ids[:2] == [p.tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
                       p.tokenizer.convert_tokens_to_ids("<|notimestamps|>")]
    assert ids[-1] == p.eos and p.decode(ids) == "low tone"
    assert p.features.n_samples == 16000 and p.features.frames == 100


def test_normaliser():
    from lftrain.evaluation.wer import normaliser

    norm = normaliser("whisper-english")
    assert norm("Hello, Dr. Smith!  It's [NOISE] 25 dollars.") == "hello doctor smith it is $25"
    assert norm("Uh, the MRI-scan um") == "the mri scan"
    assert normaliser("basic")("Hello, World!") == "hello world"
    assert normaliser("none")(" Hello,\tWorld! ") == "Hello, World!"


def test_wer_and_cer_on_hand_counted_cases():
    from lftrain.evaluation.wer import error_counts, paired_wer_difference, scores

    refs = ["the cat sat on the mat", "hello world", "abc"]
    hyps = ["the cat sit on mat", "hello world again", "abd"]
    c = error_counts(refs, hyps, "none")
    # 1 substitution + 1 deletion of 6; 1 insertion of 2; 1 substitution of 1 word
    assert c.word_errors.tolist() == [2, 1, 1] and c.words.tolist() == [6, 2, 1]
    assert c.wer() == pytest.approx(4 / 9)
    # characters (spaces count): sat->sit 1, "the " deleted 4 | " again" inserted 6 | c->d 1
    assert c.char_errors.tolist() == [5, 6, 1] and c.chars.tolist() == [22, 11, 3]
    assert c.cer() == pytest.approx(12 / 36)
    empty = error_counts(["one two"], [""], "none")
    assert empty.wer() == 1.0 and empty.cer() == 1.0
    s = scores(c, samples=200)
    assert s["wer_low"] <= s["wer"] <= s["wer_high"] and s["wer_low"] < s["wer_high"]
    same = paired_wer_difference(c, c, samples=100)
    assert same["wer_diff"] == 0 and same["relative_wer_reduction"] == 0
    perfect = error_counts(refs, refs, "none")
    better = paired_wer_difference(c, perfect, samples=100)
    assert better["relative_wer_reduction"] == 1.0 and better["wer_diff"] == pytest.approx(-4 / 9)


def _task(**cfg):
    from lftrain.tasks.speech_recognition import SpeechRecognition

    return SpeechRecognition(SpeechRecognition.Config(**cfg))


def _data_cfg():
    from lftrain.config.schema import DataConfig

    return DataConfig(train="x")


def test_reads_sidecars_librispeech_and_tables(tmp_path):
    import csv

    import soundfile as sf

    task = _task()
    ex = task.read(str(write_speech_folder(tmp_path / "lab", 2, sidecar=".lab")), _data_cfg())
    assert len(ex) == 4 and sorted(set(ex.fields["text"])) == ["high tone", "low tone"]

    chapter = tmp_path / "libri" / "19" / "198"
    chapter.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(chapter / f"19-198-000{i}.flac", rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
    (chapter / "19-198.trans.txt").write_text("19-198-0000 NORTHANGER ABBEY\n19-198-0001 THIS LITTLE WORK\n")
    ex = task.read(str(tmp_path / "libri"), _data_cfg())
    assert ex.fields["text"] == ["NORTHANGER ABBEY", "THIS LITTLE WORK"]

    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "sentence"])
        w.writerow([str(chapter / "19-198-0000.flac"), "northanger abbey"])
    ex = _task(audio="path", text="sentence").read(str(tmp_path / "t.csv"), _data_cfg())
    assert ex.fields["text"] == ["northanger abbey"] and ex.fields["rate"] == [16000]


def test_bad_transcripts_are_named(tmp_path):
    from lftrain.errors import DataError

    folder = write_speech_folder(tmp_path / "s", 1)
    (folder / "low-000.txt").unlink()
    with pytest.raises(DataError, match=r"low-000\.wav.*no transcript"):
        _task().read(str(folder), _data_cfg())
    (folder / "low-000.txt").write_text("  \n")
    with pytest.raises(DataError, match=r"low-000\.wav.*empty transcript"):
        _task().read(str(folder), _data_cfg())
    (tmp_path / "t.csv").write_text(f"audio,text\n{folder / 'high-000.wav'},\n")
    with pytest.raises(DataError, match=r"t\.csv.*row 1.*column 'text'.*empty transcript"):
        _task().read(str(tmp_path / "t.csv"), _data_cfg())


def test_clip_longer_than_the_window_is_named(tmp_path, tiny_asr):
    import soundfile as sf

    from lftrain.errors import DataError
    from lftrain.tasks.speech_processor import SpeechProcessor

    folder = write_speech_folder(tmp_path / "s", 1)
    sf.write(folder / "long.wav", np.random.default_rng(0).normal(0, 0.1, 40000).astype(np.float32), 16000)
    (folder / "long.txt").write_text("low tone")
    task = _task(window_seconds=2)
    ex = task.read(str(folder), _data_cfg())
    proc = SpeechProcessor.from_dir(tiny_asr, 2)
    with pytest.raises(DataError, match=r"long\.wav.*2\.50 s long, longer than the 2 s window"):
        task.encode(proc, ex)
    kept = _task(window_seconds=2, overlong="drop").encode(proc, ex)
    assert len(kept["seconds"]) == 2 and kept["input_features"].shape == (2, 80, 200)


def test_spec_augment_masks_training_inputs_only(tiny_asr):
    """task.spec_augment: Whisper masks time steps and mel bins of the inputs while training (a different mask each
    forward), never in evaluation; the task says its inputs vary, so nothing caches them."""
    from types import SimpleNamespace

    import torch

    from lftrain.config.schema import recipe_model
    from lftrain.tasks import build_task

    def task_with(spec: bool):
        recipe = recipe_model().model_validate({"model": {"path": str(tiny_asr)}, "data": {"train": "x.csv"},
                                        "task": {"type": "speech-recognition", "spec_augment": spec}})
        return build_task(recipe.task)

    task = task_with(True)
    source = SimpleNamespace(path=str(tiny_asr), safetensors=True, dtype="fp32", quantize=None)
    model = task.load_model(source, trust_remote_code=False, attention="eager")
    assert task.augments_input and not task_with(False).augments_input
    frames = model.config.max_source_positions * 2
    features = torch.randn(2, model.config.num_mel_bins, frames)
    start = torch.full((2, 1), model.config.decoder_start_token_id)

    def encoded(train: bool) -> torch.Tensor:
        model.train(train)
        with torch.no_grad():
            return model.model(input_features=features, decoder_input_ids=start).encoder_last_hidden_state

    import numpy as np

    evaluated = encoded(False)
    assert torch.equal(evaluated, encoded(False))
    np.random.seed(0)  # transformers draws the spans with numpy
    trained = [encoded(True) for _ in range(3)]
    assert all(not torch.allclose(t, evaluated) for t in trained)  # masked: every training forward differs
    assert not torch.equal(trained[0], trained[1])
