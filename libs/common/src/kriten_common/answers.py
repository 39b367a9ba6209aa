"""The base of every JSON answer model, and how one is turned into JSON.

Here rather than in the api because a job's answer (`kriten_common.job_answers`) is also
the body of its completion callbacks, which the collector sends: one shape, one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer


class Out(BaseModel):
    # `from_attributes`: an answer is built from its row, `XPublic.model_validate(row)`.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, from_attributes=True)


def _isoformat(moment: datetime) -> str:
    return moment.isoformat()


Timestamp = Annotated[datetime, PlainSerializer(_isoformat, return_type=str)]
"""A row's time in an answer: `isoformat()` (`+00:00`), as the api has always answered."""


def dump(model: BaseModel) -> Any:
    """The JSON value of an answer. Unset optional fields are left out, not null: some
    answers carry a field only sometimes (a job's `start_time`, a create's `key`)."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)
