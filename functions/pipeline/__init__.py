"""Lambda handlers of the retraining pipeline's light steps, one module per state.

Each is thin: parse the event (a pydantic model), build the `PipelineEnvironment` from the
function's variables, call one step of `shipml.pipeline`, return its output as JSON. The local
runner calls the same `handler` functions in-process with a local environment. Nothing here
imports torch, pandas, sklearn or pyarrow.
"""
