"""The base of InferOps' pydantic models (its own module so that code without models, such as the price
refresh, does not import pydantic)."""

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Every InferOps model but the catalog's. Its validator is built on first use rather than at import
    (`defer_build`), so a cold start pays for the models its request touches, not for all the models the function
    can import: the API alone imports over a hundred (tests/perf/bench_imports.py)."""

    model_config = ConfigDict(defer_build=True)
