"""An interpreter for the subset of the Amazon States Language that the retraining pipeline uses.

It exists so that `shipml retrain` runs the *synthesized* state machine -- the same JSON that Step
Functions runs -- on the local backend. What it implements, each rule unit-tested:

- states: Task, Choice, Pass, Wait, Succeed, Fail (Parallel and Map are refused when loading);
- input and output processing: InputPath, Parameters (keys ending in `.$` take a path, a context
  path `$$.` or an intrinsic function), ResultSelector, ResultPath (including `null`), OutputPath;
- paths: `$`, `$.a.b`, `$.a[0]`, `$['a b']`, and the context object `$$.Execution.*`, `$$.State.*`;
- intrinsic functions: States.Format, States.JsonToString, States.StringToJson, States.Array;
- Choice rules: And, Or, Not, String/Numeric/Boolean/Timestamp comparisons (also `...Path`),
  IsPresent, IsNull, IsString, IsNumeric, IsBoolean, StringMatches; Default; States.NoChoiceMatched;
- Retry (ErrorEquals, IntervalSeconds, MaxAttempts, BackoffRate, MaxDelaySeconds) and Catch
  (ErrorEquals, Next, ResultPath) with Step Functions' matching: exact names, `States.ALL` (all but
  States.Runtime), `States.TaskFailed` (any task failure but States.Timeout); retriers and catchers
  are tried in order, the first match wins;
- Fail with Error/Cause (or ErrorPath/CausePath).

Task resources are not executed here: a `TaskHandler` receives (state name, resource, the
effective parameters) and returns the result or raises `TaskError(error, cause)`. Sleeping (Retry
intervals, Wait states) goes through an injected function, so tests run instantly.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SUPPORTED_TYPES = {"Task", "Choice", "Pass", "Wait", "Succeed", "Fail"}
MAX_TRANSITIONS = 10_000


class AslError(Exception):
    """The definition uses something this interpreter does not implement, or is malformed."""


class StatesError(Exception):
    """An error as Step Functions names it (`States.Runtime`, a task's error name, ...)."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


class TaskError(StatesError):
    """Raised by a task handler: the task failed with this error name and cause."""


TaskHandler = Callable[[str, str, Any], Any]


# --- paths ---------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\['([^']*)'\]")


def parse_path(path: str) -> tuple[bool, list[str | int]]:
    """(is_context, steps) of a reference path like `$.a.b[0]` or `$$.Execution.Name`."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise StatesError("States.Runtime", f"not a path: {path!r}")
    context = path.startswith("$$")
    rest = path[2:] if context else path[1:]
    steps: list[str | int] = []
    position = 0
    while position < len(rest):
        match = _TOKEN.match(rest, position)
        if match is None:
            raise StatesError("States.Runtime", f"unsupported path syntax at {rest[position:]!r} in {path!r}")
        name, index, quoted = match.groups()
        steps.append(int(index) if index is not None else (name if name is not None else quoted))
        position = match.end()
    return context, steps


_MISSING = object()


def _walk(document: Any, steps: list[str | int]) -> Any:
    current = document
    for step in steps:
        in_list = isinstance(step, int) and isinstance(current, list) and -len(current) <= step < len(current)
        in_object = isinstance(step, str) and isinstance(current, Mapping) and step in current
        if not (in_list or in_object):
            return _MISSING
        current = current[step]
    return current


def read_path(path: str, data: Any, context: Mapping[str, Any]) -> Any:
    """The value at `path`; `States.Runtime` if it does not exist (as Step Functions fails)."""
    is_context, steps = parse_path(path)
    value = _walk(context if is_context else data, steps)
    if value is _MISSING:
        raise StatesError("States.Runtime", f"the JSONPath {path!r} could not be found in the input")
    return value


def write_result_path(path: str | None, data: Any, result: Any) -> Any:
    """ResultPath: `$` replaces the input, `$.a.b` sets a field in a copy, None keeps the input."""
    if path is None:
        return data
    is_context, steps = parse_path(path)
    if is_context:
        raise StatesError("States.Runtime", f"ResultPath cannot point into the context object: {path!r}")
    if not steps:
        return copy.deepcopy(result)
    output = copy.deepcopy(data) if isinstance(data, dict) else {}
    target = output
    for step in steps[:-1]:
        if not isinstance(step, str):
            raise StatesError("States.Runtime", f"ResultPath {path!r}: only field names are supported")
        child = target.get(step)
        if not isinstance(child, dict):
            child = {}
            target[step] = child
        target = child
    last = steps[-1]
    if not isinstance(last, str):
        raise StatesError("States.Runtime", f"ResultPath {path!r}: only field names are supported")
    target[last] = copy.deepcopy(result)
    return output


# --- intrinsic functions ------------------------------------------------------------------------


def _split_arguments(text: str) -> list[str]:
    """Split `a, 'b, c', States.X(d, e)` at top-level commas (quotes and parentheses respected)."""
    parts, depth, quoted, current, escaped = [], 0, False, [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if char == "\\":
            current.append(char)
            escaped = True
            continue
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quoted or depth:
        raise StatesError("States.Runtime", f"unbalanced quotes or parentheses in {text!r}")
    tail = "".join(current).strip()
    if tail or parts:
        parts.append(tail)
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _format(template: str, values: list[Any]) -> str:
    pieces = re.split(r"(?<!\\)\{\}", template)
    if len(pieces) - 1 != len(values):
        raise StatesError(
            "States.Runtime", f"States.Format: {len(pieces) - 1} placeholders but {len(values)} arguments"
        )
    out = [_unescape(pieces[0])]
    for value, piece in zip(values, pieces[1:], strict=True):
        out.append(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
        out.append(_unescape(piece))
    return "".join(out)


INTRINSICS: dict[str, Callable[[list[Any]], Any]] = {
    "States.Format": lambda args: _format(args[0], args[1:]),
    "States.JsonToString": lambda args: json.dumps(args[0], separators=(",", ":")),
    "States.StringToJson": lambda args: json.loads(args[0]),
    "States.Array": lambda args: list(args),
}


def evaluate_expression(text: str, data: Any, context: Mapping[str, Any]) -> Any:
    """The value of a `.$` field: a path, a context path, or an intrinsic function call."""
    text = text.strip()
    if text.startswith("$"):
        return read_path(text, data, context)
    match = re.fullmatch(r"(States\.[A-Za-z]+)\((.*)\)", text, flags=re.DOTALL)
    if match is None:
        raise StatesError("States.Runtime", f"not a path or intrinsic function: {text!r}")
    name, inner = match.groups()
    function = INTRINSICS.get(name)
    if function is None:
        raise AslError(f"intrinsic function {name} is not supported by the local runner")
    arguments: list[Any] = []
    for raw in _split_arguments(inner):
        if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
            arguments.append(raw[1:-1])  # escapes are resolved by the function (Format) or kept
        elif raw.startswith("$") or raw.startswith("States."):
            arguments.append(evaluate_expression(raw, data, context))
        else:
            try:
                arguments.append(json.loads(raw))
            except ValueError:
                raise StatesError("States.Runtime", f"{name}: cannot read argument {raw!r}") from None
    try:
        return function(arguments)
    except (IndexError, TypeError, ValueError) as exc:
        raise StatesError("States.Runtime", f"{name}: {exc}") from None


def apply_template(template: Any, data: Any, context: Mapping[str, Any]) -> Any:
    """Parameters / ResultSelector: copy the template, replacing each `key.$` by its evaluated value."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if not isinstance(value, str):
                    raise StatesError("States.Runtime", f"field {key!r} must hold a path string")
                out[key[:-2]] = evaluate_expression(value, data, context)
            else:
                out[key] = apply_template(value, data, context)
        return out
    if isinstance(template, list):
        return [apply_template(item, data, context) for item in template]
    return copy.deepcopy(template)


# --- choice rules ---------------------------------------------------------------------------------

_COMPARISONS: dict[str, tuple[type | tuple[type, ...], Callable[[Any, Any], bool]]] = {
    "StringEquals": (str, lambda a, b: a == b),
    "StringLessThan": (str, lambda a, b: a < b),
    "StringGreaterThan": (str, lambda a, b: a > b),
    "StringLessThanEquals": (str, lambda a, b: a <= b),
    "StringGreaterThanEquals": (str, lambda a, b: a >= b),
    "NumericEquals": ((int, float), lambda a, b: a == b),
    "NumericLessThan": ((int, float), lambda a, b: a < b),
    "NumericGreaterThan": ((int, float), lambda a, b: a > b),
    "NumericLessThanEquals": ((int, float), lambda a, b: a <= b),
    "NumericGreaterThanEquals": ((int, float), lambda a, b: a >= b),
    "BooleanEquals": (bool, lambda a, b: a == b),
    "TimestampEquals": (str, lambda a, b: _ts(a) == _ts(b)),
    "TimestampLessThan": (str, lambda a, b: _ts(a) < _ts(b)),
    "TimestampGreaterThan": (str, lambda a, b: _ts(a) > _ts(b)),
}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _is_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind == (int, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


def evaluate_rule(rule: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> bool:
    """Whether a Choice rule (possibly nested And/Or/Not) matches the state's input."""
    if "And" in rule:
        return all(evaluate_rule(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(evaluate_rule(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not evaluate_rule(rule["Not"], data, context)
    variable = rule.get("Variable")
    if not isinstance(variable, str):
        raise AslError(f"a choice rule without a Variable: {rule}")
    is_context, steps = parse_path(variable)
    value = _walk(context if is_context else data, steps)
    if "IsPresent" in rule:
        return (value is not _MISSING) == bool(rule["IsPresent"])
    if value is _MISSING:
        raise StatesError(
            "States.Runtime", f"Invalid path {variable!r}: the choice state's input has no such field"
        )
    checks = {
        "IsNull": lambda v: v is None,
        "IsString": lambda v: isinstance(v, str),
        "IsNumeric": lambda v: _is_type(v, (int, float)),
        "IsBoolean": lambda v: isinstance(v, bool),
    }
    for name, check in checks.items():
        if name in rule:
            return check(value) == bool(rule[name])
    if "StringMatches" in rule:
        return isinstance(value, str) and fnmatch.fnmatchcase(value, rule["StringMatches"])
    for name, (kind, compare) in _COMPARISONS.items():
        for key in (name, name + "Path"):
            if key in rule:
                expected = rule[key]
                if key.endswith("Path"):
                    expected = read_path(expected, data, context)
                # A value of another type never matches (Step Functions does not coerce).
                return _is_type(value, kind) and _is_type(expected, kind) and compare(value, expected)
    raise AslError(f"unsupported choice rule: {sorted(rule)}")


# --- errors ---------------------------------------------------------------------------------------


def error_matches(names: list[str], error: str) -> bool:
    """Step Functions' ErrorEquals matching."""
    for name in names:
        if name == error:
            return True
        if name == "States.ALL" and error != "States.Runtime":
            return True
        # As a matcher, States.TaskFailed is a wildcard for every error but a timeout.
        if name == "States.TaskFailed" and error not in ("States.Timeout", "States.Runtime"):
            return True
    return False


# --- execution ------------------------------------------------------------------------------------


@dataclass
class Execution:
    """The outcome of a run: status, output or error, and the history of events."""

    name: str
    status: str = "RUNNING"  # SUCCEEDED | FAILED
    output: Any = None
    error: str | None = None
    cause: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "cause": self.cause,
            "visited": self.visited,
            "history": self.history,
        }


def load_definition(definition: Mapping[str, Any]) -> dict[str, Any]:
    """Check that every state is of a supported type and every transition names a state."""
    states = definition.get("States")
    if not isinstance(states, Mapping) or definition.get("StartAt") not in states:
        raise AslError("a definition needs States and a StartAt naming one of them")
    for name, state in states.items():
        kind = state.get("Type")
        if kind not in SUPPORTED_TYPES:
            raise AslError(f"state {name!r}: type {kind!r} is not supported by the local runner")
        targets = [state.get("Next"), state.get("Default")]
        targets += [c.get("Next") for c in state.get("Choices", [])]
        targets += [c.get("Next") for c in state.get("Catch", [])]
        for target in targets:
            if target is not None and target not in states:
                raise AslError(f"state {name!r} goes to {target!r}, which does not exist")
    return dict(definition)


class Interpreter:
    """Runs a States Language definition, dispatching Task states to `tasks`."""

    def __init__(
        self,
        definition: Mapping[str, Any],
        tasks: TaskHandler,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.definition = load_definition(definition)
        self.tasks = tasks
        self.sleep = sleep
        self.on_event = on_event
        self.clock = clock

    def _event(self, execution: Execution, kind: str, state: str | None = None, **details: Any) -> None:
        event = {
            "id": len(execution.history) + 1,
            "timestamp": self.clock().isoformat(),
            "type": kind,
            "state": state,
            **details,
        }
        execution.history.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def run(self, execution_input: Any, *, name: str | None = None) -> Execution:
        """Execute from StartAt until a Succeed/Fail state, an end, or an uncaught error."""
        name = name or str(uuid.uuid4())
        execution = Execution(name=name)
        started = self.clock().isoformat()
        context: dict[str, Any] = {
            "Execution": {
                "Id": f"local:{name}",
                "Name": name,
                "Input": execution_input,
                "StartTime": started,
            },
            "StateMachine": {"Id": "local", "Name": "local"},
            "State": {},
        }
        self._event(execution, "ExecutionStarted", input=execution_input)
        states = self.definition["States"]
        current: str | None = self.definition["StartAt"]
        data = copy.deepcopy(execution_input)
        transitions = 0
        while current is not None:
            transitions += 1
            if transitions > MAX_TRANSITIONS:
                return self._fail(execution, "States.Runtime", f"more than {MAX_TRANSITIONS} transitions")
            state = states[current]
            execution.visited.append(current)
            context["State"] = {"Name": current, "EnteredTime": self.clock().isoformat(), "RetryCount": 0}
            self._event(execution, "StateEntered", current, state_type=state["Type"], input=data)
            try:
                data, following = self._step(execution, current, state, data, context)
            except StatesError as exc:
                handled = self._catch(execution, current, state, data, exc)
                if handled is None:
                    return self._fail(execution, exc.error, exc.cause)
                data, following = handled
            except AslError as exc:
                return self._fail(execution, "States.Runtime", str(exc))
            if state["Type"] == "Fail":
                return self._fail(execution, data["Error"], data["Cause"])
            self._event(execution, "StateExited", current, output=data)
            current = following
        execution.status = "SUCCEEDED"
        execution.output = data
        self._event(execution, "ExecutionSucceeded", output=data)
        return execution

    def _fail(self, execution: Execution, error: str, cause: str) -> Execution:
        execution.status, execution.error, execution.cause = "FAILED", error, cause
        self._event(execution, "ExecutionFailed", error=error, cause=cause)
        return execution

    def _catch(
        self, execution: Execution, name: str, state: Mapping[str, Any], data: Any, exc: StatesError
    ) -> tuple[Any, str] | None:
        for catcher in state.get("Catch", []):
            if error_matches(catcher["ErrorEquals"], exc.error):
                self._event(
                    execution, "StateCaught", name, error=exc.error, cause=exc.cause, next=catcher["Next"]
                )
                output = write_result_path(
                    catcher.get("ResultPath", "$"), data, {"Error": exc.error, "Cause": exc.cause}
                )
                return output, catcher["Next"]
        return None

    def _next(self, state: Mapping[str, Any]) -> str | None:
        return None if state.get("End") else state.get("Next")

    def _step(
        self, execution: Execution, name: str, state: Mapping[str, Any], data: Any, context: dict[str, Any]
    ) -> tuple[Any, str | None]:
        kind = state["Type"]
        if kind == "Fail":
            error, cause = state.get("Error", "States.Fail"), state.get("Cause", "")
            if "ErrorPath" in state:
                error = str(evaluate_expression(state["ErrorPath"], data, context))
            if "CausePath" in state:
                cause = str(evaluate_expression(state["CausePath"], data, context))
            return {"Error": error, "Cause": cause}, None
        effective = (
            read_path(state.get("InputPath", "$"), data, context) if state.get("InputPath", "$") else {}
        )
        if kind == "Succeed":
            return self._output(state, effective, context), None
        if kind == "Choice":
            for rule in state.get("Choices", []):
                if evaluate_rule(rule, effective, context):
                    return self._output(state, effective, context), rule["Next"]
            if "Default" in state:
                return self._output(state, effective, context), state["Default"]
            raise StatesError(
                "States.NoChoiceMatched", f"no choice rule of {name!r} matched and it has no Default"
            )
        if kind == "Wait":
            if "Seconds" in state:
                seconds = float(state["Seconds"])
            elif "SecondsPath" in state:
                seconds = float(read_path(state["SecondsPath"], effective, context))
            else:
                raise AslError(f"state {name!r}: only Seconds and SecondsPath waits are supported")
            self.sleep(seconds)
            return self._output(state, effective, context), self._next(state)
        if "Parameters" in state:
            effective = apply_template(state["Parameters"], effective, context)
        if kind == "Pass":
            result = copy.deepcopy(state["Result"]) if "Result" in state else effective
            merged = write_result_path(state.get("ResultPath", "$"), data, result)
            return self._output(state, merged, context), self._next(state)
        # Task
        result = self._run_task(execution, name, state, effective, context)
        if "ResultSelector" in state:
            result = apply_template(state["ResultSelector"], result, context)
        merged = write_result_path(state.get("ResultPath", "$"), data, result)
        return self._output(state, merged, context), self._next(state)

    def _output(self, state: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> Any:
        path = state.get("OutputPath", "$")
        return {} if path is None else read_path(path, data, context)

    def _run_task(
        self,
        execution: Execution,
        name: str,
        state: Mapping[str, Any],
        parameters: Any,
        context: dict[str, Any],
    ) -> Any:
        retriers = state.get("Retry", [])
        attempts = [0] * len(retriers)
        while True:
            self._event(execution, "TaskScheduled", name, resource=state["Resource"], parameters=parameters)
            try:
                result = self.tasks(name, state["Resource"], copy.deepcopy(parameters))
            except TaskError as exc:
                self._event(execution, "TaskFailed", name, error=exc.error, cause=exc.cause)
                # The first retrier whose ErrorEquals matches decides; exhausted, it does not fall through.
                index = next(
                    (i for i, r in enumerate(retriers) if error_matches(r["ErrorEquals"], exc.error)), None
                )
                if index is None or attempts[index] >= int(retriers[index].get("MaxAttempts", 3)):
                    raise
                retrier = retriers[index]
                delay = (
                    float(retrier.get("IntervalSeconds", 1))
                    * float(retrier.get("BackoffRate", 2.0)) ** attempts[index]
                )
                if "MaxDelaySeconds" in retrier:
                    delay = min(delay, float(retrier["MaxDelaySeconds"]))
                attempts[index] += 1
                context["State"]["RetryCount"] = sum(attempts)
                self._event(
                    execution,
                    "TaskRetryScheduled",
                    name,
                    error=exc.error,
                    attempt=attempts[index],
                    delay_s=delay,
                )
                self.sleep(delay)
                continue
            self._event(execution, "TaskSucceeded", name, output=result)
            return result
