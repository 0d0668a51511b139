"""Monitoring: drift against the live model's baseline, quality from delayed ground truth.

- `window`: a window of captured predictions as columns (local Parquet, or JSON Lines in S3);
- `statistics`: PSI, Jensen-Shannon and Wasserstein distances (numpy);
- `drift`: `compute_drift` -> `DriftReport` (per feature, prediction, per segment, the verdict);
- `report`: the drift report as one self-contained HTML file;
- `quality`: labels joined with the capture -> `QualityReport` (AUC, precision, recall, calibration);
- `publish`: metric names and the points of each report, `CloudWatchMetricsSink`;
- `jobs`: the drift and quality jobs the CLI and the scheduled Lambda functions run;
- `replay`: a data file scored and captured as served traffic (needs pyarrow and onnxruntime);
- `cli`: `shipml monitor drift|quality|status|replay`.

Nothing here imports pyarrow at module level: the Lambda path (window from JSON Lines, drift,
quality, publish, jobs) needs numpy and pydantic only.
"""
