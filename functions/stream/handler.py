"""Lambda handler: a Kinesis or Kafka (MSK / self-managed) batch -> the shipml stream consumer.

The consumer, its model and its clients are built once per execution environment (cold start).
The batch is settled as a whole (one onnxruntime call), then Powertools' batch processor turns the
records that are not settled into `batchItemFailures` (ReportBatchItemFailures), so the event
source redelivers exactly those. Capture and metrics are flushed at the end of every invocation.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import utils
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

logger = Logger(service="shipml")
_EVENT_TYPES = {"kinesis": EventType.KinesisDataStreams, "kafka": EventType.Kafka}
_runtime: dict[str, Any] = {}


def _build() -> tuple[Any, str]:
    from shipml.settings import Settings
    from shipml.stream.factory import build_consumer
    from shipml.stream.settings import StreamSettings

    utils.copy_config_to_registered_loggers(source_logger=logger, include={"shipml"})
    stream = StreamSettings.from_env()
    return build_consumer(Settings.from_env(), stream), stream.source


@logger.inject_lambda_context(log_event=False)  # records may hold PII: never logged
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from shipml.stream.records import record_id, records_from_event

    if "consumer" not in _runtime:
        _runtime["consumer"], _runtime["source"] = _build()
        # Built once, as Powertools' examples do at module level: it is reused across invocations.
        _runtime["processor"] = BatchProcessor(event_type=_EVENT_TYPES[_runtime["source"]])
        _runtime["consumer"].metrics.put("ColdStart", 1, unit="Count")
    consumer, source = _runtime["consumer"], _runtime["source"]
    try:
        result = consumer.settle(records_from_event(event, source))
        return process_partial_response(
            event=event,
            record_handler=lambda record: result.check(record_id(record.raw_event, source)),
            processor=_runtime["processor"],
            context=context,
        )
    finally:
        consumer.flush()
