"""The aws adapters of the ports: S3, SageMaker Model Registry, DynamoDB, Firehose, CloudWatch, SNS.

Each takes its client (botocore's, as boto3 makes it too) in the constructor (injected; built by
the caller at cold start, never at import time) and raises shipml's own errors, never botocore's.
"""
