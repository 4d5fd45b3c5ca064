"""Engine-free stream logic: decoding, fan-out, window state, assembly, scoring, policy, detectors.

Nothing here imports Beam, PyFlink or a Kafka client (a ruff rule enforces it).
"""
