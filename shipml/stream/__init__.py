"""Stream inference: score records from Kinesis or Kafka (or JSON Lines locally) with the same code.

- `records`: the sources' records in one shape, and decoding (base64 JSON);
- `consumer.StreamConsumer`: validate, enrich, score a batch in one call, write, dead-letter;
- `ports`: the decision output and dead-letter ports, with JSON Lines adapters; `aws`: Kinesis,
  DynamoDB and SQS adapters;
- `factory.build_consumer`: the consumer wired from settings; `cli`: `shipml stream score`.
"""
