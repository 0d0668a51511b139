"""Response models generated from the contract: the output names are the contract's."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, create_model

from shipml.contract import Contract


def build_response_models(contract: Contract) -> tuple[type[BaseModel], type[BaseModel]]:
    """(one prediction, a batch of predictions) for `contract`."""
    id_type: Any = int if contract.feature(contract.id).type == "integer" else str
    name = "".join(part.capitalize() for part in contract.model.split("_"))
    fields: dict[str, Any] = {
        contract.id: (id_type | None, Field(description="The record's id, as sent.")),
        contract.outputs.score: (float, Field(ge=0, le=1, description="The model's score.")),
        contract.outputs.label: (
            bool,
            Field(description=f"The decision: score >= {contract.outputs.threshold}."),
        ),
        "model_version": (str, Field(description="The model version that answered, e.g. fraud:3.")),
        "request_id": (str, Field(description="The request's id (x-request-id).")),
        "fallbacks": (
            list[str],
            Field(description="Online features that were unavailable and fell back to their default."),
        ),
    }
    prediction = create_model(f"{name}Prediction", **fields)  # type: ignore[call-overload]
    batch = create_model(  # type: ignore[call-overload]
        f"{name}BatchPrediction",
        request_id=(str, ...),
        model_version=(str, ...),
        predictions=(list[prediction], ...),  # type: ignore[valid-type]
    )
    return prediction, batch


class Violation(BaseModel):
    field: Annotated[str, Field(description="The field, dotted (records.3.amount).")]
    rule: Annotated[str, Field(description="The rule broken (greater_than_equal, literal_error, ...).")]
    message: str


class ErrorBody(BaseModel):
    error: Annotated[
        str,
        Field(
            description="validation_error, malformed_json, payload_too_large, unavailable, model_output "
            "(the model produced no valid score), internal."
        ),
    ]
    message: str
    request_id: str | None = None
    errors: list[Violation] = []


def error_response_model() -> type[BaseModel]:
    return ErrorBody
