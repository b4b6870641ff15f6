"""Query parameter types shared by the pages with filter forms (search, all-SAE search, table).

A browser submits a filter form's empty number fields as `x=`; empty means "no bound", not a bad
number, so these types read a blank value as None before validating.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import BeforeValidator, Field

BlankIsNone = BeforeValidator(lambda v: None if isinstance(v, str) and not v.strip() else v)
Density = Annotated[Annotated[float, Field(ge=0, le=1)] | None, BlankIsNone,
                    Query(description="feature density bound (fraction of samples, 0..1)")]
Cluster = Annotated[Annotated[int, Field(ge=-1, le=2**31 - 1)] | None, BlankIsNone,
                    Query(description="feature-map cluster id (-1: noise)")]
