"""daemon.Processor is what pipeline_turns.py takes it for (pipeline_host.PipelineHost): each method
with the same parameters, each attribute set by the processor.  mypy would say so, but does not
check daemon.py yet (pyproject.toml)."""

import inspect
import re

from uvrd.processor.daemon import Processor
from uvrd.processor.pipeline_host import PipelineHost


def _members(cls) -> dict:
    return {name: value for name, value in vars(cls).items() if inspect.isfunction(value) and not name.startswith("__")}


def test_the_processor_has_every_method_the_pipeline_calls_with_the_same_parameters():
    for name, method in _members(PipelineHost).items():
        assert name in vars(Processor), f"Processor has no {name}"
        theirs = list(inspect.signature(getattr(Processor, name)).parameters)
        assert theirs == list(inspect.signature(method).parameters), name


def test_the_processor_sets_every_attribute_the_pipeline_reads():
    made = inspect.getsource(Processor.__init__)
    for name in PipelineHost.__annotations__:
        assert re.search(rf"self\.{name}\b(: [^=\n]+)? = ", made), f"Processor sets no {name}"
