"""The States Language interpreter, rule by rule: paths, input and output processing, Choice, Retry, Catch."""

from __future__ import annotations

from typing import Any

import pytest

from shipml.pipeline.asl import (
    AslError,
    Interpreter,
    StatesError,
    TaskError,
    apply_template,
    error_matches,
    evaluate_expression,
    evaluate_rule,
    load_definition,
    read_path,
    write_result_path,
)

CONTEXT = {"Execution": {"Name": "run-1", "Input": {"reason": "test"}}}


class RecordingTasks:
    """A task handler that records its calls and answers from a script (a value, or an error to raise)."""

    def __init__(self, script: dict[str, list[Any]] | None = None) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.script = script or {}

    def __call__(self, state: str, resource: str, parameters: Any) -> Any:
        self.calls.append((state, resource, parameters))
        answers = self.script.get(state, [{"ok": True}])
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def run(definition: dict[str, Any], tasks: RecordingTasks | None = None, data: Any = None, **kw: Any):
    sleeps: list[float] = []
    interpreter = Interpreter(definition, tasks or RecordingTasks(), sleep=sleeps.append, **kw)
    return interpreter.run({} if data is None else data, name="run-1"), sleeps


# --- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", {"a": {"b": [10, 20]}, "c d": 1}),
        ("$.a.b", [10, 20]),
        ("$.a.b[1]", 20),
        ("$['c d']", 1),
        ("$$.Execution.Name", "run-1"),
    ],
)
def test_read_path_follows_fields_indexes_and_the_context(path: str, expected: Any) -> None:
    assert read_path(path, {"a": {"b": [10, 20]}, "c d": 1}, CONTEXT) == expected


def test_read_path_of_a_missing_field_is_a_runtime_error() -> None:
    with pytest.raises(StatesError) as caught:
        read_path("$.missing", {"a": 1}, CONTEXT)

    assert caught.value.error == "States.Runtime"


def test_result_path_dollar_replaces_the_input() -> None:
    assert write_result_path("$", {"a": 1}, {"b": 2}) == {"b": 2}


def test_result_path_field_merges_into_a_copy_of_the_input() -> None:
    original = {"a": 1}

    merged = write_result_path("$.x.y", original, 5)

    assert merged == {"a": 1, "x": {"y": 5}}
    assert original == {"a": 1}


def test_result_path_null_keeps_the_input() -> None:
    assert write_result_path(None, {"a": 1}, {"b": 2}) == {"a": 1}


# --- parameters and intrinsic functions ----------------------------------------------------------


def test_parameters_copy_static_values_and_evaluate_dollar_keys() -> None:
    template = {
        "Static": {"n": 1},
        "Name.$": "$.name",
        "Run.$": "$$.Execution.Name",
        "List": [{"x.$": "$.n"}],
    }

    assert apply_template(template, {"name": "job", "n": 3}, CONTEXT) == {
        "Static": {"n": 1},
        "Name": "job",
        "Run": "run-1",
        "List": [{"x": 3}],
    }


def test_states_format_fills_placeholders_with_strings_and_json() -> None:
    text = evaluate_expression(
        "States.Format('run {} v{} {}', $$.Execution.Name, $.v, $.o)", {"v": 3, "o": None}, CONTEXT
    )

    assert text == "run run-1 v3 null"


def test_states_format_keeps_commas_and_escaped_quotes_inside_strings() -> None:
    assert evaluate_expression("States.Format('a, \\'b\\' {}', $.x)", {"x": "c"}, CONTEXT) == "a, 'b' c"


def test_json_to_string_and_back() -> None:
    data = {"o": {"k": [1, 2]}}

    text = evaluate_expression("States.JsonToString($.o)", data, CONTEXT)

    assert text == '{"k":[1,2]}'
    assert evaluate_expression("States.StringToJson($.s)", {"s": text}, CONTEXT) == {"k": [1, 2]}


def test_format_with_the_wrong_number_of_arguments_is_a_runtime_error() -> None:
    with pytest.raises(StatesError, match="placeholders"):
        evaluate_expression("States.Format('{} {}', $.x)", {"x": 1}, CONTEXT)


def test_an_unknown_intrinsic_is_refused() -> None:
    with pytest.raises(AslError, match="States.Hash"):
        evaluate_expression("States.Hash($.x, 'SHA-1')", {"x": 1}, CONTEXT)


# --- choice rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"Variable": "$.s", "StringEquals": "Succeeded"}, True),
        ({"Variable": "$.s", "StringEquals": "Failed"}, False),
        ({"Variable": "$.n", "NumericGreaterThan": 2}, True),
        ({"Variable": "$.n", "NumericLessThanEqualsPath": "$.limit"}, True),
        ({"Variable": "$.b", "BooleanEquals": True}, True),
        ({"Variable": "$.n", "StringEquals": "3"}, False),  # no coercion across types
        ({"Variable": "$.missing", "IsPresent": False}, True),
        ({"Variable": "$.none", "IsNull": True}, True),
        ({"Variable": "$.s", "StringMatches": "Succ*"}, True),
        (
            {"And": [{"Variable": "$.b", "BooleanEquals": True}, {"Variable": "$.n", "NumericEquals": 3}]},
            True,
        ),
        (
            {"Or": [{"Variable": "$.b", "BooleanEquals": False}, {"Variable": "$.n", "NumericEquals": 4}]},
            False,
        ),
        ({"Not": {"Variable": "$.b", "BooleanEquals": False}}, True),
    ],
)
def test_choice_rules(rule: dict[str, Any], expected: bool) -> None:
    data = {"s": "Succeeded", "n": 3, "limit": 3, "b": True, "none": None}

    assert evaluate_rule(rule, data, CONTEXT) is expected


def test_a_comparison_on_a_missing_variable_is_a_runtime_error() -> None:
    with pytest.raises(StatesError, match="Invalid path"):
        evaluate_rule({"Variable": "$.missing", "StringEquals": "x"}, {}, CONTEXT)


# --- error matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "error", "expected"),
    [
        (["GateError"], "GateError", True),
        (["GateError"], "OtherError", False),
        (["States.ALL"], "Lambda.ServiceException", True),
        (["States.ALL"], "States.Runtime", False),
        (["States.TaskFailed"], "States.TaskFailed", True),
        (["States.TaskFailed"], "InvalidRunRequest", True),
        (["States.TaskFailed"], "States.Timeout", False),
    ],
)
def test_error_matching(names: list[str], error: str, expected: bool) -> None:
    assert error_matches(names, error) is expected


# --- whole executions ----------------------------------------------------------------------------


def task(name: str, nxt: str | None = None, **extra: Any) -> dict[str, Any]:
    state = {"Type": "Task", "Resource": f"arn:aws:states:::test:{name}", **extra}
    state.update({"Next": nxt} if nxt else {"End": True})
    return state


def test_task_input_and_output_processing_in_order() -> None:
    definition = {
        "StartAt": "T",
        "States": {
            "T": task(
                "t",
                InputPath="$.inner",
                Parameters={"value.$": "$.v"},
                ResultSelector={"got.$": "$.Payload.x"},
                ResultPath="$.result",
                OutputPath="$.result",
            )
        },
    }
    tasks = RecordingTasks({"T": [{"Payload": {"x": 42}}]})

    execution, _ = run(definition, tasks, {"inner": {"v": 7}})

    assert tasks.calls[0][2] == {"value": 7}
    assert execution.status == "SUCCEEDED"
    assert execution.output == {"got": 42}


def test_pass_state_result_and_result_path() -> None:
    definition = {
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Result": {"d": 1}, "ResultPath": "$.defaults", "End": True}},
    }

    execution, _ = run(definition, data={"a": 1})

    assert execution.output == {"a": 1, "defaults": {"d": 1}}


def test_choice_goes_to_the_first_match_else_default_else_fails() -> None:
    definition = {
        "StartAt": "C",
        "States": {
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.ok", "BooleanEquals": True, "Next": "Yes"}],
                "Default": "No",
            },
            "Yes": {"Type": "Succeed"},
            "No": {"Type": "Fail", "Error": "Rejected", "Cause": "not ok"},
        },
    }

    passed, _ = run(definition, data={"ok": True})
    rejected, _ = run(definition, data={"ok": False})

    assert (passed.status, passed.visited) == ("SUCCEEDED", ["C", "Yes"])
    assert (rejected.status, rejected.error, rejected.cause) == ("FAILED", "Rejected", "not ok")


def test_choice_without_a_match_or_default_fails_with_no_choice_matched() -> None:
    definition = {
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.ok", "BooleanEquals": True, "Next": "Y"}]},
            "Y": {"Type": "Succeed"},
        },
    }

    execution, _ = run(definition, data={"ok": False})

    assert execution.error == "States.NoChoiceMatched"


def test_retry_backs_off_then_succeeds() -> None:
    retry = [{"ErrorEquals": ["Throttled"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 3}]
    definition = {"StartAt": "T", "States": {"T": task("t", Retry=retry)}}
    tasks = RecordingTasks({"T": [TaskError("Throttled"), TaskError("Throttled"), {"done": 1}]})

    execution, sleeps = run(definition, tasks)

    assert execution.status == "SUCCEEDED"
    assert sleeps == [2.0, 6.0]
    assert len(tasks.calls) == 3


def test_retry_gives_up_after_max_attempts_and_honours_max_delay() -> None:
    retry = [
        {
            "ErrorEquals": ["States.ALL"],
            "IntervalSeconds": 10,
            "MaxAttempts": 2,
            "BackoffRate": 10,
            "MaxDelaySeconds": 30,
        }
    ]
    definition = {"StartAt": "T", "States": {"T": task("t", Retry=retry)}}
    tasks = RecordingTasks({"T": [TaskError("Boom", "cause")]})

    execution, sleeps = run(definition, tasks)

    assert (execution.status, execution.error, execution.cause) == ("FAILED", "Boom", "cause")
    assert sleeps == [10.0, 30.0]


def test_only_the_first_matching_retrier_applies() -> None:
    retry = [
        {"ErrorEquals": ["Boom"], "MaxAttempts": 0},
        {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5},
    ]
    definition = {"StartAt": "T", "States": {"T": task("t", Retry=retry)}}
    tasks = RecordingTasks({"T": [TaskError("Boom")]})

    execution, _ = run(definition, tasks)

    assert execution.status == "FAILED"
    assert len(tasks.calls) == 1


def test_catch_routes_the_error_with_its_result_path() -> None:
    definition = {
        "StartAt": "T",
        "States": {
            "T": task(
                "t", "Never", Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "F"}]
            ),
            "Never": {"Type": "Succeed"},
            "F": {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"},
        },
    }
    tasks = RecordingTasks({"T": [TaskError("GateError", "bad")]})

    execution, _ = run(definition, tasks, {"keep": 1})

    assert execution.visited == ["T", "F"]
    assert (execution.error, execution.cause) == ("GateError", "bad")
    caught = [e for e in execution.history if e["type"] == "StateCaught"]
    assert caught[0]["next"] == "F"


def test_a_runtime_error_is_not_caught_by_states_all() -> None:
    definition = {
        "StartAt": "T",
        "States": {
            "T": task(
                "t",
                "Ok",
                Parameters={"x.$": "$.missing"},
                Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Ok"}],
            ),
            "Ok": {"Type": "Succeed"},
        },
    }

    execution, _ = run(definition)

    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")


def test_wait_sleeps_for_seconds_or_seconds_path() -> None:
    definition = {
        "StartAt": "W1",
        "States": {
            "W1": {"Type": "Wait", "Seconds": 5, "Next": "W2"},
            "W2": {"Type": "Wait", "SecondsPath": "$.delay", "End": True},
        },
    }

    execution, sleeps = run(definition, data={"delay": 7})

    assert execution.status == "SUCCEEDED"
    assert sleeps == [5.0, 7.0]


def test_history_records_every_state_and_the_outcome() -> None:
    definition = {"StartAt": "T", "States": {"T": task("t")}}

    execution, _ = run(definition)

    kinds = [e["type"] for e in execution.history]
    assert kinds == [
        "ExecutionStarted",
        "StateEntered",
        "TaskScheduled",
        "TaskSucceeded",
        "StateExited",
        "ExecutionSucceeded",
    ]


def test_unsupported_state_types_and_dangling_transitions_are_refused_at_load() -> None:
    with pytest.raises(AslError, match="Parallel"):
        load_definition({"StartAt": "P", "States": {"P": {"Type": "Parallel", "Branches": [], "End": True}}})
    with pytest.raises(AslError, match="Nowhere"):
        load_definition({"StartAt": "T", "States": {"T": task("t", "Nowhere")}})
