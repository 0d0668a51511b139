"""The stream inference Lambda function (Kinesis, Kafka)."""
