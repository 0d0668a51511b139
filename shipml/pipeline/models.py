"""The pipeline's boundaries: pydantic models of each step's input and output, and its settings.

Every model is what travels between states of the state machine (JSON), so each refuses unknown
keys and names the field that is wrong. The settings (quality rules, gate tolerances) have
defaults that make a first deployment work, and are overridden through SHIPML_* variables.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipml.errors import ShipmlError

#: SageMaker job names: 1-63 characters, letters, digits and hyphens, no leading/trailing hyphen.
JOB_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
#: Hyperparameters the pipeline lets an execution override (the rest are fixed by the pipeline).
OVERRIDABLE_HYPERPARAMETERS = frozenset(
    {
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "hidden",
        "dropout",
        "seed",
        "holdout_fraction",
        "pos_weight",
    }
)


class PipelineError(ShipmlError):
    """A pipeline step cannot go on; the message says which check failed and where."""


class InvalidRunRequest(PipelineError):
    """The execution input is malformed; the message names the field."""


class DataValidationFailed(PipelineError):
    """The training data broke the contract or a quality rule; the report says what and where."""


class EvaluationFailed(PipelineError):
    """The challenger could not be evaluated (NaN scores, an unreadable artifact, no holdout)."""


class RolloutFailed(PipelineError):
    """Shifting serving to the new version failed or was rolled back."""


class _Boundary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


def describe_validation_error(exc: ValidationError, *, prefix: str = "") -> str:
    """One line per problem, each naming the field (`hyperparameters.epochs: ...`)."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(input)"
        parts.append(f"{prefix}{where}: {error['msg']}")
    return "; ".join(parts)


# --- the execution input ---------------------------------------------------------------------------


class RunRequest(_Boundary):
    """The execution input. Every field has a default, so "Start execution" with `{}` works.

    - `data_uri`: where the training data is (an s3:// prefix, or a local path for the local runner);
      default: the data lake's training prefix of the model, `s3://{bucket}/datasets/{model}/training/`;
    - `hyperparameters`: overrides of the training hyperparameters (epochs, lr, ...);
    - `reason`: why this run happens (stored with the registered version and in notifications).
    """

    data_uri: Annotated[str | None, Field(min_length=1, description="Training data prefix or path.")] = None
    hyperparameters: Annotated[
        dict[str, Any], Field(description="Overrides of the training hyperparameters.")
    ] = {}
    reason: Annotated[str, Field(max_length=256, description="Why this run was started.")] = "scheduled"

    @field_validator("hyperparameters")
    @classmethod
    def _known_hyperparameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - OVERRIDABLE_HYPERPARAMETERS)
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown}; allowed: {sorted(OVERRIDABLE_HYPERPARAMETERS)}"
            )
        for key, item in value.items():
            if not isinstance(item, str | int | float | list) or isinstance(item, bool):
                raise ValueError(f"{key} must be a number, a string or a list, got {type(item).__name__}")
        return value

    @classmethod
    def parse(cls, payload: Any) -> RunRequest:
        """Validate an execution input; `InvalidRunRequest` names each bad field."""
        if payload is None:
            payload = {}
        if not isinstance(payload, Mapping):
            raise InvalidRunRequest(
                f"the execution input must be a JSON object, got {type(payload).__name__}"
            )
        try:
            return cls.model_validate(dict(payload))
        except ValidationError as exc:
            raise InvalidRunRequest("invalid execution input: " + describe_validation_error(exc)) from None


class RunPlan(_Boundary):
    """What PrepareRun decides for one execution: names, locations, the champion. Read by every state."""

    run_id: Annotated[str, Field(pattern=r"^[a-zA-Z0-9-]{1,40}$")]
    model_name: str
    reason: str
    data_uri: str
    run_uri: Annotated[str, Field(description="Prefix under which this run writes its files.")]
    training_job_name: Annotated[str, Field(pattern=JOB_NAME_PATTERN)]
    validation_job_name: Annotated[str, Field(pattern=JOB_NAME_PATTERN)]
    evaluation_job_name: Annotated[str, Field(pattern=JOB_NAME_PATTERN)]
    #: SageMaker wants every hyperparameter as a string; values are JSON-encoded.
    hyperparameters: dict[str, str]
    #: The live version's artifact (model.tar.gz), or "" when there is no live model yet.
    champion_uri: str
    champion_version: int | None
    validation_uri: str
    evaluation_uri: str
    model_output_uri: str
    checkpoint_uri: str


# --- steps -----------------------------------------------------------------------------------------


class Problem(_Boundary):
    """One failed check: which rule, on which column, how many rows, and a message."""

    check: str
    column: str | None = None
    rows: int | None = None
    message: str


class ValidationReport(_Boundary):
    """The outcome of ValidateData; `ok` is false when any problem was found."""

    ok: bool
    rows: int
    problems: list[Problem] = []
    warnings: list[Problem] = []
    label_rate: float | None = None
    drift_psi: dict[str, float] = {}
    contract_summary: str = ""

    def describe(self, limit: int = 8) -> str:
        if self.ok:
            return f"{self.rows} rows passed every check ({len(self.warnings)} warnings)"
        lines = [f"{p.column + ': ' if p.column else ''}{p.message}" for p in self.problems[:limit]]
        more = f" (+{len(self.problems) - limit} more)" if len(self.problems) > limit else ""
        return f"the training data failed {len(self.problems)} check(s){more}: " + "; ".join(lines)


class ModelEvaluation(_Boundary):
    """Holdout metrics of one model: `overall` and `segments[segment][value]`, as shipml.evaluation gives."""

    version: int | None = None
    overall: dict[str, Any]
    segments: dict[str, dict[str, dict[str, Any]]] = {}


class EvaluationReport(_Boundary):
    """Evaluate's output: challenger and champion scored on the same holdout rows."""

    holdout_rows: int
    holdout_start: str
    challenger: ModelEvaluation
    champion: ModelEvaluation | None = None


class GateCheck(_Boundary):
    scope: str  # "overall" or "segment country=BR"
    metric: str
    challenger: float | None
    reference: float | None  # the champion's value, or the floor
    limit: float | None
    passed: bool
    message: str


class GateVerdict(_Boundary):
    """Gate's output: `passed`, the rule applied (`floors` for a first model, `champion` otherwise)."""

    passed: bool
    basis: Literal["floors", "champion"]
    champion_version: int | None
    summary: str
    failures: list[GateCheck] = []
    checks: int


class RegisteredModel(_Boundary):
    version: int
    status: str
    approved: bool
    artifact_uri: str
    digest: str


class Rollout(_Boundary):
    """Where the shift of serving to a new version stands."""

    status: Literal["InProgress", "Succeeded", "Failed"]
    version: int
    deployment_id: str | None = None
    function_version: str | None = None
    previous_function_version: str | None = None
    detail: str = ""


class Promotion(_Boundary):
    version: int
    previous_version: int | None
    message: str


# --- settings --------------------------------------------------------------------------------------


class _EnvSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    env_prefix: ClassVar[str] = "SHIPML_"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Any:
        """Defaults, overridden by `{prefix}{FIELD}` variables (JSON values for dicts)."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            key = f"{cls.env_prefix}{name.upper()}"
            if key in environ:
                raw = environ[key]
                # Dict settings arrive as JSON objects; pydantic's lax mode parses the scalars.
                values[name] = json.loads(raw) if raw.lstrip().startswith("{") else raw
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls.env_prefix}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
            )
            raise PipelineError(f"invalid pipeline settings: {problems}") from None


class QualityRules(_EnvSettings):
    """Quality checks on top of the contract's rules. Variables: SHIPML_QUALITY_{FIELD}."""

    env_prefix: ClassVar[str] = "SHIPML_QUALITY_"

    min_rows: Annotated[int, Field(ge=1, description="Fewer rows than this refuses the data.")] = 2_000
    max_missing_rate: Annotated[
        float, Field(ge=0, le=1, description="Ceiling on the missing rate of any optional input.")
    ] = 0.2
    missing_rate_ceilings: Annotated[
        dict[str, float], Field(description="Per-column ceilings that override max_missing_rate.")
    ] = {}
    min_label_rate: Annotated[float, Field(ge=0, le=1)] = 0.001
    max_label_rate: Annotated[float, Field(ge=0, le=1)] = 0.5
    max_duplicate_ids: Annotated[
        int, Field(ge=0, description="Rows sharing an id beyond this refuse the data.")
    ] = 0
    drift_warning_psi: Annotated[
        float, Field(gt=0, description="PSI above this is reported as a warning.")
    ] = 0.2
    drift_failure_psi: Annotated[
        float,
        Field(
            gt=0, description="PSI above this refuses the data: the feature changed meaning (unit, encoding)."
        ),
    ] = 3.0

    @field_validator("missing_rate_ceilings")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for name, rate in value.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"{name}: a missing-rate ceiling must be in [0, 1], got {rate}")
        return value


class GateSettings(_EnvSettings):
    """How much worse a challenger may be than the champion, and the floors for a first model.

    Variables: SHIPML_GATE_{FIELD}. AUC may drop by at most `max_auc_drop` overall and
    `max_segment_auc_drop` in any segment value with at least `min_segment_rows` rows and
    `min_segment_positives` positives; log loss may rise by at most `max_log_loss_increase`
    (relative). A first model must reach `min_auc`, and stay under `max_log_loss` and
    `max_calibration_error` when those are set: they are off by default because training weights
    the positive class (its scores rank well but are not calibrated probabilities).
    """

    env_prefix: ClassVar[str] = "SHIPML_GATE_"

    max_auc_drop: Annotated[float, Field(ge=0, le=1)] = 0.005
    max_segment_auc_drop: Annotated[float, Field(ge=0, le=1)] = 0.02
    max_log_loss_increase: Annotated[float, Field(ge=0, description="Relative, e.g. 0.05 = 5 %.")] = 0.05
    min_segment_rows: Annotated[int, Field(ge=1)] = 500
    min_segment_positives: Annotated[int, Field(ge=1)] = 20
    min_auc: Annotated[float, Field(ge=0, le=1)] = 0.7
    max_log_loss: Annotated[float | None, Field(gt=0)] = None
    max_calibration_error: Annotated[float | None, Field(ge=0, le=1)] = None
