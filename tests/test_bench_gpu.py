"""scripts/bench_gpu.py --tiny runs end to end on the CPU and reports every figure."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from ptransfer.embed import extract

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_mode_runs_on_the_cpu(tmp_path, monkeypatch, capsys):
    # bf16 autocast is forced on so the benchmark's bf16 path runs on any CPU.
    monkeypatch.setattr(extract, "cpu_has_native_bf16", lambda: True)
    out = tmp_path / "bench.json"
    results = load_script().main(["--tiny", "--device", "cpu", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    for family in ("fair-esm", "transformers"):
        for work in ("gb1", "ss3"):
            figures = results[f"{family}/{work}"]
            rates = [figures["bf16"]["real_tok_s"], figures["bf16"]["padded_tok_s"],
                     figures["ratio_fp32_vs_loop"]]
            assert all(math.isfinite(r) and r > 0 for r in rates)
            # padding only adds tokens: GB1-like sequences have one length, ss3-like do not
            assert figures["bf16"]["padded_tok_s"] >= figures["bf16"]["real_tok_s"]
        assert results[f"{family}/peak_gib"] == {"1022": None, "4000_windowed": None}
        assert results[f"{family}/150M_batch_tok_s"] > 0
    assert results["transformers/gb1"]["bf16"]["padded_tok_s"] == pytest.approx(
        results["transformers/gb1"]["bf16"]["real_tok_s"])
    assert results["ridge_s"]["cpu"] > 0 and "cuda" not in results["ridge_s"]
    assert results["streaming_ss3_res_s"] > 0
    printed = capsys.readouterr().out
    assert "fair-esm loop" in printed and "streaming ss3 probe" in printed


def test_full_mode_refuses_the_cpu():
    with pytest.raises(SystemExit):
        load_script().main(["--device", "cpu"])
