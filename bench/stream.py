"""Benchmark: the stream Lambda handler on batches of 100 and 1,000 records against one-by-one scoring.

Measured in one run, on this machine, with the same records: `functions.stream.handler.handler`
(Powertools logger and batch processor, base64 + JSON decoding, contract validation, one online
feature lookup per batch in SQLite, encoding, onnxruntime, PII masking, capture through the Firehose
adapter, decisions through the Kinesis adapter) invoked with Kinesis events of 1 record (the
baseline: one-by-one scoring, what a per-record consumer pays), 100 records and 1,000 records.
The Kinesis and Firehose clients are in-memory fakes, so serialising and handing over the records is
counted and the network round trips are not (which flatters the one-by-one baseline: it would pay
one round trip per record where a batch pays one per 500). The model is the tests' logistic ONNX
graph over the example contract's encoding.

Prints records/s per batch size, then one JSON line with batch_vs_single (records/s at 1,000 /
records/s at 1) and batch100_vs_single.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving_handlers import InMemoryFirehose  # noqa: E402

from tests.builders import LambdaContext, kinesis_event  # noqa: E402

CONTRACT = ROOT / "examples" / "fraud" / "contract.yaml"
CUSTOMERS = 2_000


class InMemoryKinesis:
    """Stands in for the Kinesis client of the decision output: counts the records, answers success."""

    def __init__(self) -> None:
        self.records = 0

    def put_records(self, StreamName: str, Records: list) -> dict:  # noqa: N803 - boto3's names
        self.records += len(Records)
        return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1", "ShardId": "s"} for _ in Records]}


def prepare(root: Path) -> None:
    """A live model in a local registry and online features for the customers."""
    from shipml.backends import LIVE, local_backends
    from tests.conftest import artifact_for

    artifact = artifact_for(CONTRACT, root / "artifact")
    backends = local_backends(root / "shipml")
    backends.registry.register("fraud", artifact)
    backends.registry.approve("fraud", 1)
    backends.registry.set_alias("fraud", LIVE, 1)
    backends.online.put_many(
        "fraud",
        {
            f"C{i:08d}": {
                "txn_count_24h": i % 40,
                "mean_amount_30d": 20.0 + i % 300,
                "days_since_first_seen": i % 2000,
            }
            for i in range(CUSTOMERS)
        },
    )


def records(count: int, offset: int = 0) -> list[dict]:
    channels, currencies = ["in_store", "online", "atm", "phone"], ["EUR", "USD", "GBP", "CHF"]
    return [
        {
            "transaction_id": f"T{offset + i:012d}",
            "customer_id": f"C{(offset + i) % CUSTOMERS:08d}",
            "card_number": "4111111111111111",
            "amount": round(5.0 + (offset + i) * 7.31 % 2000, 2),
            "currency": currencies[i % 4],
            "merchant_category": "electronics",
            "country": "DE",
            "channel": channels[i % 4],
            "card_present": i % 2 == 0,
            "event_time": "2026-01-15T23:45:00+01:00",
        }
        for i in range(count)
    ]


def build_handler(root: Path):
    from shipml.backends.aws.sinks import FirehoseCaptureSink
    from shipml.stream.aws import KinesisDecisionSink

    os.environ.update(
        {
            "SHIPML_BACKEND": "local",
            "SHIPML_ROOT": str(root / "shipml"),
            "SHIPML_CONTRACT": str(CONTRACT),
            "SHIPML_STREAM_SOURCE": "kinesis",
            "SHIPML_STREAM_OUTPUT": "jsonl",
            "SHIPML_STREAM_OUTPUT_FILE": os.devnull,
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    from functions.stream import handler as module

    module.handler(kinesis_event(records(1)), LambdaContext())  # cold start, outside the timings
    consumer = module._runtime["consumer"]
    consumer.output = KinesisDecisionSink(InMemoryKinesis(), "decisions")
    consumer.capture = FirehoseCaptureSink(InMemoryFirehose(), "capture")
    return module.handler


def records_per_second(handler, batch: int, total: int, repeats: int) -> list[float]:
    """records/s of `repeats` runs, each scoring `total` records in events of `batch` records.

    Events are kept as JSON text and parsed per invocation, as the Lambda runtime hands them over.
    """
    events = [json.dumps(kinesis_event(records(batch, offset=start))) for start in range(0, total, batch)]
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for event in events:
            response = handler(json.loads(event), LambdaContext())
            assert response == {"batchItemFailures": []}, response
        rates.append(total / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3_000, help="records per run (a multiple of 1,000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per batch size; the median is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(root)
        handler = build_handler(root)
        records_per_second(handler, 100, 1_000, 1)  # warm-up
        rates = {
            batch: records_per_second(handler, batch, args.records, args.repeats) for batch in (1, 100, 1_000)
        }

    median = {batch: statistics.median(values) for batch, values in rates.items()}
    print(f"{'batch size':>10}{'records/s (median)':>22}{'min':>12}{'max':>12}")
    for batch, values in rates.items():
        print(f"{batch:>10}{median[batch]:>22,.0f}{min(values):>12,.0f}{max(values):>12,.0f}")
    print(
        json.dumps(
            {
                "batch_vs_single": round(median[1_000] / median[1], 2),
                "batch100_vs_single": round(median[100] / median[1], 2),
                "records_per_s_single": round(median[1]),
                "records_per_s_100": round(median[100]),
                "records_per_s_1000": round(median[1_000]),
            }
        )
    )


if __name__ == "__main__":
    main()
