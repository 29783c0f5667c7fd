"""The base of every recipe section: strict (unknown keys are errors), documented fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A recipe section. `extra="forbid"` makes a typo an error instead of a silently ignored key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)
