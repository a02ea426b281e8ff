"""The base of every record a session keeps in its manifest (core/session/manifest.py and the modules it
is made of): typed, documented field by field, tolerant of fields a newer release added."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True, extra="ignore", validate_assignment=False)
