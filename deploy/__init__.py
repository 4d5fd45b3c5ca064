"""How the job runs for real: the embedded local broker, Flink cluster config, container images."""
