"""Shared pieces of every config type: strict frozen models and the common constrained types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    """Unknown keys are errors, so a typo (``lr_rate:``) never becomes a silently ignored setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)
