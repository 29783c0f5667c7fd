"""What one input of a served task is (`POST /predict`), declared by each task class as `serve_input`: pydantic
models with `extra="forbid"`, so a misspelt or unknown field is a 422 naming it. Inputs use the same field names
whatever the run's column names are; the server maps them to the recipe's columns."""

from __future__ import annotations

from typing import Annotated

from pydantic import Base64Bytes, BaseModel, ConfigDict, Field, model_validator

Text = Annotated[str, Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextInput(Strict):
    """One text, or a text pair (pair tasks such as NLI)."""

    text: Text
    text_pair: Text | None = None


class WordsInput(Strict):
    """Token classification: raw text (split into words by the tokenizer) or the words themselves."""

    text: Text | None = None
    tokens: Annotated[list[Text], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> WordsInput:
        if (self.text is None) == (self.tokens is None):
            raise ValueError("give either 'text' or 'tokens' (a list of words), not both or neither")
        return self


class QAInput(Strict):
    """Extractive QA: a question and the context its answer is a span of."""

    question: Text
    context: Text


class ImageInput(Strict):
    """An image file's bytes (PNG, JPEG, ...), base64-encoded."""

    image: Base64Bytes


class AudioInput(Strict):
    """An audio clip's bytes (WAV, FLAC), base64-encoded."""

    audio: Base64Bytes


class PromptInput(Strict):
    """A prompt to a causal-lm-sft run, answered as a one-turn conversation."""

    prompt: Text
