"""The KFP pipelines and the ways to run them (kfp.local here, a Kubeflow Pipelines API server on a cluster)."""

import inspect as _inspect
from types import SimpleNamespace as _Namespace

from kfp.dsl import pipeline_task as _pipeline_task

# kfp 2.17's PipelineTask calls `inspect.stack()` in every set_cpu_request, set_memory_limit, ... only to name the
# caller in an error message. With source context (the default) that reads and locates the source of every frame
# on the stack: cheap in a short script, but under pytest's deep stacks building our three pipelines took about 20 s
# of each test session's collection (measured). The frame names are all the message needs, so kfp's module gets
# an `inspect` whose `stack` takes no source context; everything else is the real module.
_pipeline_task.inspect = _Namespace(**{**vars(_inspect), "stack": lambda context=0: _inspect.stack(context)})
