"""The per-item predictions file: dtypes, pairing ids, atomic write, schema check."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from ptransfer.analysis.predictions import (
    PREDICTIONS_FILE,
    item_id,
    predictions_frame,
    read_predictions,
    write_predictions,
)


def test_item_id_is_the_store_key():
    assert item_id("MKV") == hashlib.sha256(b"MKV").hexdigest()


def test_round_trip_keeps_values_and_small_dtypes(tmp_path):
    items = np.array([item_id("AAA")] * 3 + [item_id("CC")] * 2)
    residue = predictions_frame("cb513", 2, items, np.array([0, 1, 2, 0, 1]),
                                np.array([0, 1, 2, 2, 1]), np.array([0, 1, 1, 2, 0]),
                                classification=True)
    protein = predictions_frame("test", 0, np.array([item_id("AAA")]), np.array([-1]),
                                np.array([0.5]), np.array([0.25]))
    path = tmp_path / PREDICTIONS_FILE
    write_predictions([residue], path)
    back = read_predictions(path)
    assert back["y_pred"].dtype == np.int16 and back["layer"].dtype == np.int16
    assert back["y_pred"].tolist() == [0, 1, 1, 2, 0]
    assert back["position"].tolist() == [0, 1, 2, 0, 1]
    assert set(back["item"].astype(str)) == {item_id("AAA"), item_id("CC")}
    write_predictions([protein], path)
    assert read_predictions(path)["y_true"].tolist() == [0.5]
    assert not list(tmp_path.glob("*.tmp"))


def test_mismatched_lengths_and_foreign_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="test layer 3: y_pred has 1 entries, items has 2"):
        predictions_frame("test", 3, np.array(["a", "b"]), np.array([-1, -1]),
                          np.array([1.0, 2.0]), np.array([1.0]))
    other = tmp_path / "other.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(other)
    with pytest.raises(ValueError, match=r"other.parquet: not a ptransfer predictions file"):
        read_predictions(other)
