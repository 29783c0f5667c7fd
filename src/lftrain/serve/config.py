"""The limits and knobs of a server, shared by the app, the CLI and `lftrain.api.serve`."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ServeConfig:
    """How a run is served. Every limit answers a client that exceeds it with a 4xx (or 503) JSON error."""

    max_batch: int = 32
    """Inputs run through the model in one forward pass at most (rows of concurrent requests put together)."""
    max_wait_ms: float = 5.0
    """How long the first request of a micro-batch waits for others to join it."""
    max_queue: int = 256
    """Requests waiting for the model at most; one more gets 503 (try again later)."""
    max_inputs: int = 64
    """Inputs one /predict request may carry (more: 422)."""
    max_body_bytes: int = 1_000_000
    """Largest request body accepted, in bytes (larger: 413)."""
    max_new_tokens: int = 512
    """Largest `max_tokens` a chat completion may ask for (causal-lm-sft runs)."""
    temperature: bool = True
    """Calibrate /predict probabilities with the run's stored temperature (as `lft predict` does by default)."""

    def __post_init__(self) -> None:
        from lftrain.errors import InputError

        for name in ("max_batch", "max_queue", "max_inputs", "max_body_bytes", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"serve: {name} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise InputError(f"serve: max_wait_ms must not be negative, got {self.max_wait_ms}")

    def public(self) -> dict:
        """The limits as /metadata shows them."""
        return asdict(self)
