"""Training rows of a sampled variant: every positive kept at weight 1, organic negatives subsampled and
weighted back, benign trap events never positive; leave-one-family-out drops exactly that family."""

from __future__ import annotations

import numpy as np
import pytest

from streamwarden.models.train_variants import NEGATIVE_KEEP, Rows, spec_rows
from streamwarden.operators.traffic.variants import variant_spec


@pytest.fixture(scope="module")
def rows() -> tuple[Rows, Rows]:
    spec = variant_spec("train", 100, duration_s=300.0)
    return spec_rows(spec, subsample=False), spec_rows(spec, subsample=True)


def test_subsampling_keeps_positives_and_weights_negatives_back(rows):
    full, sub = rows
    assert full.feature_names == sub.feature_names
    assert int(sub.y.sum()) == int(full.y.sum()) > 0
    assert np.all(sub.w[sub.y == 1] == 1.0)
    assert np.all(sub.w[sub.y == 0] == 1.0 / NEGATIVE_KEEP)
    kept = (sub.y == 0).sum() / (full.y == 0).sum()
    assert abs(kept - NEGATIVE_KEEP) < 0.03
    # Weighted negatives stand for the whole organic stream.
    assert abs(sub.w[sub.y == 0].sum() / (full.y == 0).sum() - 1.0) < 0.1


def test_traps_are_negative_and_families_can_be_left_out(rows):
    full, _ = rows
    assert set(full.scenario[full.y == 1]) <= {
        "streaming_farm", "spam_burst", "follow_farm", "credential_stuffing", "signup_burst"
    }  # fmt: skip
    without = full.without("follow_farm")
    assert "follow_farm" not in set(without.scenario)
    assert len(without.y) == len(full.y) - int((full.scenario == "follow_farm").sum())
