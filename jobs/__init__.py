"""Engine bindings and pipeline assembly (Beam, Flink), job config and the CLI."""
