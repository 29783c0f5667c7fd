"""What a request may hold: pydantic models with `extra="forbid"`, so a misspelt or unknown field is a 422 naming
it. Inputs use the same field names whatever the run's column names are (`text`, `text_pair`, `tokens`, `question`,
`context`, `image`, `audio`, `prompt`); `inputs.to_row` maps them to the recipe's columns."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from pydantic import Base64Bytes, BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

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


def _bare(first: str, fields: list[str], bare: bool, value: Any) -> Any:
    """A bare string stands for an input's first field (`"great film"` is `{"text": "great film"}`)."""
    if isinstance(value, str) and bare:
        return {first: value}
    if not isinstance(value, dict):
        either = "a string or " if bare else ""
        raise ValueError(f"expected {either}an object with the fields {', '.join(fields)}; got {type(value).__name__}")
    return value


# task type -> what one input is (a bare string stands for the first field where the task takes text)
INPUTS: dict[str, tuple[Any, bool]] = {
    "text-classification": (TextInput, True),
    "multi-label-classification": (TextInput, True),
    "text-regression": (TextInput, True),
    "token-classification": (WordsInput, True),
    "extractive-qa": (QAInput, False),
    "image-classification": (ImageInput, False),
    "audio-classification": (AudioInput, False),
    "causal-lm-sft": (PromptInput, True),
}


def predict_request(task_type: str, max_inputs: int) -> type[BaseModel]:
    """The body of POST /predict for a task: `{"inputs": [...]}`, 1 to `max_inputs` of them."""
    item, bare = INPUTS[task_type]
    first = next(iter(item.model_fields))
    kind = Annotated[item, BeforeValidator(partial(_bare, first, list(item.model_fields), bare))]
    return create_model("PredictRequest", __config__=ConfigDict(extra="forbid"),
                        inputs=(Annotated[list[kind], Field(min_length=1, max_length=max_inputs)], ...))


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Strict):
    """The body of POST /v1/chat/completions: OpenAI's fields that apply to one local model."""

    model: str | None = None  # accepted and ignored: the server has one model
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # greedy by default, as `lft chat` is
    stream: bool = False
    n: Literal[1] = 1

    @model_validator(mode="after")
    def _ends_with_user(self) -> ChatRequest:
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message is the assistant's: end with a user (or system) message to answer")
        return self
