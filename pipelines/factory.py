"""The one way a pipeline is defined: a body that takes PipelineParams, and the names of the parameters it declares.

    @pipeline_of("homefeed-training", "Train, evaluate, ...", TRAINING)
    def homefeed_training(p: PipelineParams) -> Outputs:
        data = c.data(source=p.source, seed=p.seed)
        ...

The KFP pipeline's signature is made from PipelineParams (pipelines/params.py): each declared name with its type
and default, in the order given, so a parameter's type, default and bounds live in one place. While KFP defines the
pipeline, the body gets a PipelineParams whose fields are KFP's placeholders for the run's values (built without
validation: placeholders are not values; the values are checked when a run is submitted). Fields the pipeline does
not declare are absent, so a stage that reads one fails when the pipeline is defined, not silently with a default.
(No `from __future__ import annotations`: KFP and this factory read the live annotations.)
"""

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from kfp import dsl

from pipelines.params import DEFAULTS, PipelineParams


def placeholders(values: dict[str, Any]) -> PipelineParams:
    """A PipelineParams holding exactly `values` (KFP placeholders while a pipeline is defined)."""
    params = PipelineParams.model_construct(**values)
    for name in PipelineParams.model_fields.keys() - values.keys():
        del params.__dict__[name]  # undeclared: reading it raises AttributeError
    return params


def signature(names: Sequence[str], returns: Any) -> inspect.Signature:
    fields = PipelineParams.model_fields
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise ValueError(f"not pipeline parameters (pipelines/params.py): {unknown}")
    return inspect.Signature(
        [
            inspect.Parameter(
                n,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=getattr(DEFAULTS, n),
                annotation=fields[n].annotation,
            )
            for n in names
        ],  # fmt: skip
        return_annotation=returns,
    )


def pipeline_of(name: str, description: str, parameters: Sequence[str]) -> Callable:
    """Decorator: the KFP pipeline `name` whose body is the decorated function (PipelineParams -> its outputs)."""
    names = tuple(parameters)
    signature(names, None)  # unknown names fail here, where the pipeline module is imported

    def define(body: Callable[[PipelineParams], Any]) -> Callable:
        def pipeline_func(*args: Any, **kwargs: Any) -> Any:
            return body(placeholders(dict(zip(names, args, strict=False)) | kwargs))

        pipeline_func.__signature__ = signature(names, inspect.signature(body).return_annotation)
        pipeline_func.__name__ = pipeline_func.__qualname__ = body.__name__
        pipeline_func.__module__, pipeline_func.__doc__ = body.__module__, body.__doc__
        return dsl.pipeline(name=name, description=description)(pipeline_func)

    return define
