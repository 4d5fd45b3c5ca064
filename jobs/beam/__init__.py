"""Apache Beam bindings: Kafka read/write in Python (confluent-kafka) and the pipeline's thin DoFns."""
