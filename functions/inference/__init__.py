"""The real-time inference Lambda function."""
