"""Spike for issue 17: what one Python operator running the whole pipeline does per second on Flink.

Not the job: a measurement that tells whether fusing every stage into one keyed Python operator per
TaskManager (no GIL shared between busy operators) is worth building. One ``KeyedProcessFunction`` on a
MiniCluster at parallelism 1, thread mode, all elements on one key, runs the replay's own per-event
logic (decode, the compiled window core, scoring in batches of ``--batch``, the policy, the cooldown
gate and reputation) over the default traffic (seed 2). The state a fused layout must write per event
is modelled, not implemented: one ``MapState.put_all`` of one ~250-byte entry per route of the event
(six), i.e. one state call per event; ``--no-state`` leaves it out. No Kafka and no timers, checkpoints
only with ``--checkpoint-ms``: an upper bound for the fused layout, to set against ``streamwarden bench
flink``.

    .venv/bin/python -m streamwarden.jobs.bench.flink_fused_spike [--n 60000] [--batch 64] [--backend rocksdb]

Prints one JSON line: steady-state events/s (after the first fifth) and the operator thread's CPU per
event.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyflink.common import Row
from pyflink.common.typeinfo import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from streamwarden.jobs.flink.env import FlinkConfig
from streamwarden.jobs.flink.job import job_env, key_by_field0
from streamwarden.operators.features.assemble import FeatureVector
from streamwarden.operators.features.replay import VelocityPipeline
from streamwarden.operators.pipeline import DictSlot, Stages, StagesConfig
from streamwarden.operators.policy.reputation import TargetState
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import SourceRef

ROUTE_STATES = 6
"""Entries written per event: one per entity key an event of the default spec updates, at most."""


class FusedFunction(KeyedProcessFunction):  # type: ignore[misc]
    """The whole pipeline for the records whose indexes arrive, payloads read from ``payload_file``."""

    def __init__(self, payload_file: str, out_file: str, warm: int, batch: int, state: bool) -> None:
        self.payload_file, self.out_file = payload_file, out_file
        self.warm, self.batch, self.write_state = warm, batch, state

    def open(self, runtime_context: RuntimeContext) -> None:
        self.payloads: list[bytes] = pickle.loads(Path(self.payload_file).read_bytes())
        self.stages = Stages.build(StagesConfig())
        self.pipe = VelocityPipeline(self.stages.spec, out_of_orderness_ms=self.stages.out_of_orderness_ms)
        gates: dict[str, bytes] = {}
        targets: dict[str, TargetState] = {}
        self.gate_slot, self.target_slot = DictSlot(gates), DictSlot(targets)
        descriptor = MapStateDescriptor("keys", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        self.state = runtime_context.get_map_state(descriptor)
        self.blob = os.urandom(250)
        self.pending: list[FeatureVector] = []
        self.count = self.actions = 0
        self.t_warm = self.t_last = self.cpu_warm = self.cpu_last = 0.0

    def _flush(self) -> None:
        scored, _ = self.stages.score_each(self.pending)
        for vector, scores in scored:
            for key, payload in self.stages.decide_keyed(vector, scores):
                self.gate_slot.key = self.target_slot.key = key
                step = self.stages.subject_step(key, payload, self.gate_slot, self.target_slot)
                self.actions += len(step.actions)
        self.pending.clear()

    def process_element(self, index: int, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        out = self.stages.decode(self.payloads[index], SourceRef("events", 0, index), None)
        if isinstance(out, pb.Event):
            self.pending.append(self.pipe.process(out))
            if self.write_state:
                self.state.put_all({f"{k}|{out.event_id}": self.blob for k in range(ROUTE_STATES)})
            if len(self.pending) >= self.batch:
                self._flush()
        self.count += 1
        if self.count == self.warm:
            self.t_warm, self.cpu_warm = time.time(), time.thread_time()
        self.t_last, self.cpu_last = time.time(), time.thread_time()
        yield from ()

    def close(self) -> None:
        self._flush()  # the last partial batch (after the measured window), so every event is decided
        figures = {"count": self.count, "t_warm": self.t_warm, "t_last": self.t_last}
        figures |= {"cpu_s": self.cpu_last - self.cpu_warm, "actions": self.actions}
        Path(self.out_file).write_text(json.dumps(figures))


def _discard(ds: Any) -> None:
    from pyflink.java_gateway import get_gateway

    sink = get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()
    ds._j_data_stream.sinkTo(sink)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60_000, help="records of the seed-2 traffic to run")
    ap.add_argument("--batch", type=int, default=64, help="events per scoring batch")
    ap.add_argument("--backend", choices=["rocksdb", "hashmap"], default="rocksdb")
    ap.add_argument("--no-state", action="store_true", help="leave out the modelled state writes")
    ap.add_argument("--checkpoint-ms", type=int, default=0, help="checkpoint interval (0: none)")
    ap.add_argument("--payloads", type=Path, help="a pickled list of record bytes (default: seed 2)")
    args = ap.parse_args()

    from streamwarden.operators.evaluation.harness import traffic_from_spec
    from streamwarden.operators.traffic import load_spec

    work = Path(tempfile.mkdtemp(prefix="flink-fused-spike-"))
    os.environ.setdefault("FLINK_LOG_DIR", str(work / "logs"))
    if args.payloads is not None:
        payloads = pickle.loads(args.payloads.read_bytes())[: args.n]
    else:
        payloads = traffic_from_spec(load_spec(None, seed=2)).payloads[: args.n]
    payload_file, out_file = work / "payloads.pkl", work / "figures.json"
    payload_file.write_bytes(pickle.dumps(payloads))
    warm = len(payloads) // 5

    # the job's own environment (its DEFAULT_FLINK_EXTRA included), so only the layout differs
    flink = FlinkConfig(  # type: ignore[call-arg]
        state_backend=args.backend,
        checkpoint_interval_ms=args.checkpoint_ms,
        checkpoint_dir=(work / "checkpoints").as_uri(),
        ship_connector_jars=False,  # no Kafka here
        extra={"execution.checkpointing.incremental": "true"},  # as deploy/flink/config.yaml
    )
    env = job_env(flink)
    rows = env.from_collection(
        [Row(0, i) for i in range(len(payloads))], type_info=Types.ROW([Types.LONG(), Types.LONG()])
    )
    fused = FusedFunction(str(payload_file), str(out_file), warm, args.batch, not args.no_state)
    _discard(key_by_field0(rows, Types.LONG(), Types.LONG()).process(fused, output_type=Types.LONG()))
    env.execute("streamwarden-fused-spike")

    got = json.loads(out_file.read_text())
    steady = got["count"] - warm
    rate = steady / (got["t_last"] - got["t_warm"])
    print(
        json.dumps(
            {
                "events_per_s": round(rate),
                "cpu_us_per_record": round(1e6 * got["cpu_s"] / steady, 1),
                "records": got["count"],
                "actions": got["actions"],
                "batch": args.batch,
                "backend": args.backend,
                "state_writes": not args.no_state,
                "checkpoint_ms": args.checkpoint_ms,
            }
        )
    )


if __name__ == "__main__":
    main()
