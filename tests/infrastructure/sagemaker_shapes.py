"""Checks a Step Functions task's Parameters against botocore's service model of the API it calls,
so that a misspelt or mistyped parameter fails a test instead of a deployment."""

from __future__ import annotations

from typing import Any


def shape_problems(value: Any, shape: Any, where: str) -> list[str]:
    """Every key that is not a member of the API's input shape, every type that does not fit."""
    problems: list[str] = []
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{where}: expected an object for {shape.name}"]
        given = set()
        for key, item in value.items():
            name = key[:-2] if key.endswith(".$") else key
            given.add(name)
            if name not in shape.members:
                problems.append(f"{where}.{name}: not a member of {shape.name}")
            elif key.endswith(".$"):
                if not (isinstance(item, str) and item.startswith(("$", "States."))):
                    problems.append(f"{where}.{key}: a dynamic value must be a path or an intrinsic")
            else:
                problems += shape_problems(item, shape.members[name], f"{where}.{name}")
        problems += [
            f"{where}.{m}: required by {shape.name}" for m in shape.required_members if m not in given
        ]
    elif kind == "list":
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        for index, item in enumerate(value):
            problems += shape_problems(item, shape.member, f"{where}[{index}]")
    elif kind == "map":
        if not isinstance(value, dict):
            return [f"{where}: expected a map"]
        for key, item in value.items():
            if not key.endswith(".$"):
                problems += shape_problems(item, shape.value, f"{where}.{key}")
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {value!r}")
        elif shape.enum and value not in shape.enum:
            problems.append(f"{where}: {value!r} is not one of {shape.enum}")
    elif kind in ("integer", "long"):
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {value!r}")
        elif (low is not None and value < low) or (high is not None and value > high):
            problems.append(f"{where}: {value} outside [{low}, {high}]")
    elif kind == "boolean" and not isinstance(value, bool):
        problems.append(f"{where}: expected a boolean, got {value!r}")
    elif kind in ("float", "double") and (isinstance(value, bool) or not isinstance(value, int | float)):
        problems.append(f"{where}: expected a number, got {value!r}")
    return problems
