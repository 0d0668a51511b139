"""The retraining pipeline: steps as plain functions, and the local runner of its state machine.

- `models`: the pydantic boundaries (execution input, plan, reports, verdict) and the settings
  (quality rules, gate tolerances);
- `steps`: prepare a run, validate data, evaluate, gate, register, promote;
- `quality`: the data-quality checks and drift (PSI) against the previous training set;
- `processing`: the SageMaker Processing entry points (ValidateData, Evaluate);
- `rollout`: the AWS deploy (a Lambda version pinned to the model, CodeDeploy shifting `live`);
- `asl`, `local`, `definition`, `cli`: `shipml retrain`, which interprets the state machine the CDK
  construct synthesizes, dispatching each Task to its local implementation.

Nothing here imports aws_cdk; the Lambda path (models, steps' gate/register/promote, rollout,
environment, storage) imports neither torch, pandas, sklearn nor pyarrow.
"""
