"""SageMaker Processing entry point of the pipeline's ValidateData step.

The job runs `python -m training.validate_data` on the training image, with the training data
mounted at `/opt/ml/processing/input/data`; it writes `report.json` to
`/opt/ml/processing/output/report` and fails (exit 1, the reason in `/opt/ml/output/message`) when
the data breaks the contract or a quality rule. The code is the local runner's ValidateData step:
`shipml.pipeline.processing.run_validate_data`.
"""

from __future__ import annotations

import sys


def main() -> int:
    from shipml.pipeline.processing import main as processing_main

    return processing_main(["validate-data"])


if __name__ == "__main__":
    sys.exit(main())
