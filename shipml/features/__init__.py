"""Features from where they live: materialised into the online store, joined point in time for
training, and looked up from external HTTP sources that fail gracefully.

- `aggregate`: the contract's aggregations evaluated at given points in time (one implementation
  for materialisation and the training join);
- `materialize`: the ETL job: lake -> aggregations as of a time -> the online store, incremental
  by time window, idempotent, reporting rows read, rows refused and items written;
- `training`: point-in-time training data;
- `lake`: where the transactions history is read from (a local path, or a blob store prefix);
- `http`: `HttpFeatureSource`, an external API with Secrets Manager credentials, timeouts,
  retries with jitter and a circuit breaker;
- `i18n`: locale-formatted numbers and currency conversion, used by the contract's validators;
- `job`: the scheduled job on AWS (Lambda handler and SageMaker Processing entry point);
- `cli`: `shipml features materialize` and `shipml features training-set`.

Importing this package imports nothing heavy; pyarrow is imported inside the functions that use it.
"""
