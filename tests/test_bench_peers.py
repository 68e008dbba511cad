"""`kfac-bench bench bench.peers=[asdl]` (issue 15, kfac_bench/studies/bench_peers.py): its validation
everywhere; a tiny run where the optional extra (asdfghjkl) is installed. Speed is never asserted."""
import importlib.util
import math

import pytest

from kfac_bench.studies.bench import run_bench
from kfac_bench.studies.bench_peers import COLUMNS, PeerUnavailable, check_peers

TINY = [{"name": "tiny_bce", "layers": [12, 8, 3, 8, 12], "batch_size": 16, "likelihood": "bernoulli"}]


@pytest.mark.parametrize("peers,match", [(["pytorch-kfac"], "unknown peer"), ("asdl", "must be a list")])
def test_bad_peers_are_named(peers, match):
    with pytest.raises(ValueError, match=match):
        check_peers(peers)


def test_a_missing_peer_names_the_extra(monkeypatch):
    # None in sys.modules makes any import of asdl fail, installed or not
    monkeypatch.setitem(__import__("sys").modules, "asdl", None)
    with pytest.raises(PeerUnavailable, match=r"kfac-bench\[peers\]"):
        check_peers(["asdl"])
    assert check_peers([]) == [] and check_peers(None) == []


@pytest.mark.skipif(importlib.util.find_spec("asdl") is None, reason="asdfghjkl (extra kfac-bench[peers]) absent")
def test_peer_bench_prints_both_ratios(tmp_path, capsys):
    cfg = {"seed": 0, "device": "cpu", "bench": {"datasets": TINY, "peers": ["asdl"], "T1": 3, "T2": 3,
                                                 "rounds": 2, "n_batches": 2}}
    df = run_bench(cfg, tmp_path)
    assert list(df.columns) == COLUMNS and len(df) == 1
    row = df.iloc[0]
    for col in ("ours_sgd_ms", "ours_kfac_ms", "asdl_sgd_ms", "asdl_kfac_ms", "ours_ratio", "asdl_ratio",
                "ours_over_asdl", "ours_kfac_update_ms", "asdl_kfac_update_ms", "sgd_control"):
        assert row[col] > 0 and math.isfinite(row[col]), col
    assert row["ours_over_asdl_lo"] <= row["ours_over_asdl"] <= row["ours_over_asdl_hi"]
    out = capsys.readouterr().out
    assert "ours_ratio" in out and "asdl_ratio" in out and "sgd_control" in out and (tmp_path / "bench_peers.md").is_file()
