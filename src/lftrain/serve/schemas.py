"""What a request may hold: pydantic models with `extra="forbid"`, so a misspelt or unknown field is a 422 naming
it. One input of `POST /predict` is what the run's task declares (`Task.serve_input`, tasks/inputs.py)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

from lftrain.tasks.inputs import Strict

if TYPE_CHECKING:
    from lftrain.tasks.base import Task


def _bare(first: str, fields: list[str], bare: bool, value: Any) -> Any:
    """A bare string stands for an input's first field (`"great film"` is `{"text": "great film"}`)."""
    if isinstance(value, str) and bare:
        return {first: value}
    if not isinstance(value, dict):
        either = "a string or " if bare else ""
        raise ValueError(f"expected {either}an object with the fields {', '.join(fields)}; got {type(value).__name__}")
    return value


def predict_request(task: type[Task], max_inputs: int) -> type[BaseModel]:
    """The body of POST /predict for a task: `{"inputs": [...]}`, 1 to `max_inputs` of the task's `serve_input`."""
    item, bare = task.serve_input, task.serve_bare_strings
    assert item is not None, "a task without serve_input is not served"
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
