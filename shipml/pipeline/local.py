"""The local runner: the synthesized state machine, executed on the local backend.

`LocalTasks` gives each Task resource of the definition its local implementation:

- `lambda:invoke`: the function's handler (named in the exported document), called in-process
  with a local environment;
- `sagemaker:createProcessingJob.sync`: `shipml.pipeline.processing` (ValidateData, Evaluate) on
  local paths;
- `sagemaker:createTrainingJob.sync`: `training.launcher.run_local`, 2 gloo workers, the SageMaker
  code path;
- `sns:publish`: the local notifier (the log and notifications.jsonl).

URIs in the parameters (`s3://<artifact bucket stand-in>/...`) map to the local blob folder, so the
files a run writes land where the local registry keeps its models. Failures take the shape Step
Functions gives them: a handler's exception becomes an error named after its class with a JSON
cause, a failed job `States.TaskFailed` with the job description as cause.
"""

from __future__ import annotations

import importlib
import json
import tempfile
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipml import artifact as artifacts
from shipml.errors import ShipmlError
from shipml.pipeline.asl import Execution, Interpreter, TaskError
from shipml.pipeline.environment import PipelineEnvironment
from shipml.pipeline.models import QualityRules
from shipml.pipeline.storage import LocalRunStorage
from shipml.settings import Settings

EXECUTIONS_DIR = "pipeline/executions"
#: Variables of the caller's environment that reach the local steps (gate/quality tuning, approval).
PASSED_THROUGH = ("SHIPML_GATE_", "SHIPML_QUALITY_", "SHIPML_AUTO_APPROVE")


class LocalLambdaContext:
    """The few attributes of a Lambda context object a handler might read."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = 512

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def _handler(dotted: str) -> Callable[..., Any]:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _job_failed(kind: str, name: str, reason: str) -> TaskError:
    status_key = "TrainingJobStatus" if kind == "Training" else "ProcessingJobStatus"
    cause = {f"{kind}JobName": name, status_key: "Failed", "FailureReason": reason[:1024]}
    return TaskError("States.TaskFailed", json.dumps(cause))


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


class LocalTasks:
    """Dispatches the Task states of an exported definition to their local implementations."""

    def __init__(
        self,
        document: Mapping[str, Any],
        settings: Settings,
        *,
        workers: int = 2,
        environ: Mapping[str, str] | None = None,
        training_timeout_s: float | None = 1800,
        echo: bool = False,
    ) -> None:
        self.document = document
        self.bucket = document["stand_ins"]["artifact_bucket"]
        self.settings = settings.model_copy(update={"backend": "local", "artifact_bucket": self.bucket})
        self.workers = workers
        self.environ = {k: v for k, v in (environ or {}).items() if k.startswith(PASSED_THROUGH)}
        self.training_timeout_s = training_timeout_s
        self.echo = echo
        self.storage = LocalRunStorage(self.settings.root / "blobs", self.bucket)

    def __call__(self, state: str, resource: str, parameters: Any) -> Any:
        if resource.endswith(":lambda:invoke"):
            return self.invoke(parameters)
        if resource.endswith(":sagemaker:createProcessingJob.sync"):
            return self.processing_job(parameters)
        if resource.endswith(":sagemaker:createTrainingJob.sync"):
            return self.training_job(parameters)
        if resource.endswith(":sns:publish"):
            return self.publish(parameters)
        raise TaskError("States.Runtime", f"the local runner has no implementation of {resource}")

    # --- Lambda ----------------------------------------------------------------------------------

    def environment(self, function_variables: Mapping[str, str]) -> PipelineEnvironment:
        """The function's variables from the definition, pointed at the local backend."""
        variables = {
            **function_variables,
            **self.environ,
            "SHIPML_BACKEND": "local",
            "SHIPML_ROOT": str(self.settings.root),
            "SHIPML_MODEL": self.settings.model,
            "SHIPML_CONTRACT": str(self.settings.contract),
            "SHIPML_ARTIFACT_BUCKET": self.bucket,
        }
        return PipelineEnvironment.from_env(variables)

    def invoke(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        arn = parameters.get("FunctionName")
        spec = self.document["functions"].get(arn)
        if spec is None:
            raise TaskError("Lambda.ResourceNotFoundException", f"no function {arn!r} in the definition")
        handler = _handler(spec["handler"])
        try:
            payload = handler(
                parameters.get("Payload"),
                LocalLambdaContext(spec["logical_id"]),
                env=self.environment(spec["environment"]),
            )
        except Exception as exc:  # noqa: BLE001 - a Lambda error, as Step Functions reports it
            error = type(exc).__name__
            raise TaskError(error, json.dumps({"errorMessage": str(exc), "errorType": error})) from None
        return {"Payload": json.loads(json.dumps(payload)), "StatusCode": 200, "ExecutedVersion": "$LATEST"}

    # --- SageMaker -------------------------------------------------------------------------------

    def processing_job(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        from shipml.pipeline.processing import run_evaluate, run_validate_data

        name = parameters["ProcessingJobName"]
        inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in parameters.get("ProcessingInputs", [])}
        outputs = {
            o["OutputName"]: o["S3Output"]["S3Uri"] for o in parameters["ProcessingOutputConfig"]["Outputs"]
        }
        environment = {**parameters.get("Environment", {}), **self.environ}
        arguments = parameters["AppSpecification"].get("ContainerArguments", [])
        champion_uri = environment.get("SHIPML_CHAMPION_URI", "")
        champion = self.storage.path(champion_uri) if champion_uri else None
        try:
            if arguments == ["training.validate_data"]:
                run_validate_data(
                    data=self.storage.path(inputs["data"]),
                    contract_path=self.settings.contract,
                    output_dir=self.storage.path(outputs["report"]),
                    rules=QualityRules.from_env(environment),
                    champion=champion,
                )
            elif arguments == ["shipml.pipeline.processing", "evaluate"]:
                version = environment.get("SHIPML_CHAMPION_VERSION", "")
                run_evaluate(
                    data=self.storage.path(inputs["data"]),
                    contract_path=self.settings.contract,
                    challenger=self.storage.path(inputs["model"]),
                    output_dir=self.storage.path(outputs["report"]),
                    champion=champion,
                    champion_version=int(version) if version.isdigit() else None,
                    holdout_fraction=float(environment.get("SHIPML_HOLDOUT_FRACTION") or 0.2),
                )
            else:
                raise TaskError("States.Runtime", f"{name}: unknown processing program {arguments}")
        except ShipmlError as exc:
            raise _job_failed("Processing", name, str(exc)) from None
        return {
            "ProcessingJobName": name,
            "ProcessingJobStatus": "Completed",
            "ProcessingJobArn": f"arn:aws:sagemaker:local:000000000000:processing-job/{name}",
        }

    def training_job(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        from training.launcher import ResourceConfigError, TrainingFailed, run_local

        name = parameters["TrainingJobName"]
        channel = next(c for c in parameters["InputDataConfig"] if c["ChannelName"] == "train")
        data = self.storage.path(channel["DataSource"]["S3DataSource"]["S3Uri"])
        # As SageMaker: the packed /opt/ml/model lands at {S3OutputPath}/{job}/output/model.tar.gz.
        model_uri = f"{parameters['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output/model.tar.gz"
        checkpoints = self.storage.path(parameters["CheckpointConfig"]["S3Uri"])
        hyperparameters = {
            k: _decode(v)
            for k, v in parameters.get("HyperParameters", {}).items()
            if k != "contract" and not k.startswith("sagemaker_")
        }
        with tempfile.TemporaryDirectory(prefix=f"shipml-{name}-") as tmp:
            try:
                out = run_local(
                    data,
                    Path(tmp) / "model",
                    contract_path=self.settings.contract,
                    workers=self.workers,
                    hyperparameters=hyperparameters,
                    checkpoint_dir=checkpoints,
                    timeout_s=self.training_timeout_s,
                    log_path=Path(tmp) / "train.log",
                    echo=self.echo,
                )
            except TrainingFailed as exc:
                raise _job_failed("Training", name, str(exc).splitlines()[0]) from None
            except (ResourceConfigError, FileNotFoundError, FileExistsError) as exc:
                raise _job_failed("Training", name, str(exc)) from None
            self.storage.write_bytes(model_uri, artifacts.pack(out))
        return {
            "TrainingJobName": name,
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": model_uri},
        }

    # --- SNS -------------------------------------------------------------------------------------

    def publish(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        from shipml.backends import local_backends

        subject = parameters.get("Subject", "shipml")
        severity = "error" if any(w in subject for w in ("failed", "rejected")) else "info"
        local_backends(self.settings.root).notifier.notify(
            subject, str(parameters.get("Message", "")), severity=severity
        )
        return {"MessageId": str(uuid.uuid4())}


def execution_name(now: datetime | None = None) -> str:
    """A unique execution name, like the console's: `local-20260131T120000-1a2b3c4d`."""
    now = now or datetime.now(UTC)
    return f"local-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def save_history(root: Path, execution: Execution) -> Path:
    """Write the execution (status, output, every event) to `{root}/pipeline/executions/{name}.json`."""
    from shipml import atomic

    target = Path(root) / EXECUTIONS_DIR / f"{execution.name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(target) as tmp:
        Path(tmp).write_text(json.dumps(execution.to_json(), indent=2, default=str), encoding="utf-8")
    return target


def run_pipeline(
    document: Mapping[str, Any],
    tasks: Callable[[str, str, Any], Any],
    execution_input: Any,
    *,
    root: Path,
    name: str | None = None,
    sleep: Callable[[float], None] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Execution, Path]:
    """Interpret the exported definition with `tasks`; save the history; return both."""
    import time

    interpreter = Interpreter(document["definition"], tasks, sleep=sleep or time.sleep, on_event=on_event)
    execution = interpreter.run(execution_input, name=name or execution_name())
    return execution, save_history(root, execution)
