"""`kfac-bench bench bench.peers=[asdl]` (issue 15, kfac_bench/studies/bench_peers.py): its validation
everywhere; a tiny run where the optional extra (asdfghjkl) is installed. Speed is never asserted."""
import importlib.util
import math

import pytest

from kfac_bench.studies.bench import run_bench
from kfac_bench.studies.bench_peers import COLUMNS, PeerUnavailable, check_peers

TINY = [{"name": "tiny_bce", "layers": [12, 8, 3, 8, 12], "batch_size": 16, "likelihood": "bernoulli"}]
CONV = {"name": "tiny_conv", "model": {"kind": "conv_autoencoder", "image_shape": [1, 8, 8], "channels": [2, 3],
                                       "kernel_size": 3}, "batch_size": 8, "likelihood": "bernoulli"}
HAS_ASDL = importlib.util.find_spec("asdl") is not None


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


@pytest.mark.skipif(not HAS_ASDL, reason="asdfghjkl (extra kfac-bench[peers]) absent")
def test_peer_bench_prints_both_ratios(tmp_path, capsys):
    cfg = {"seed": 0, "device": "cpu", "bench": {"datasets": TINY + [CONV], "peers": ["asdl"], "T1": 3, "T2": 3,
                                                 "rounds": 2, "n_batches": 2}}
    df = run_bench(cfg, tmp_path)
    assert list(df.columns) == COLUMNS and len(df) == 2
    # the MLP: every layer on both sides; the CNN: ASDL has no ConvTranspose2d, so both precondition the Conv2d's
    assert list(df["layers"]) == ["all", "encoder.0,encoder.2"]
    for _, row in df.iterrows():
        _check_row(row)
    out = capsys.readouterr().out
    assert "ours_ratio" in out and "asdl_ratio" in out and "sgd_control" in out
    assert (tmp_path / "bench_peers.md").is_file()


@pytest.mark.skipif(not HAS_ASDL, reason="asdfghjkl (extra kfac-bench[peers]) absent")
def test_the_common_layers_are_those_asdl_preconditions_too():
    from kfac_bench.models import build_autoencoder
    from kfac_bench.studies.bench_peers import common_layers
    assert common_layers(build_autoencoder(TINY[0])) is None
    assert common_layers(build_autoencoder(CONV)) == ["encoder.0", "encoder.2"]


def _check_row(row):
    for col in ("ours_sgd_ms", "ours_kfac_ms", "asdl_sgd_ms", "asdl_kfac_ms", "ours_ratio", "asdl_ratio",
                "ours_over_asdl", "ours_kfac_update_ms", "asdl_kfac_update_ms", "sgd_control"):
        assert row[col] > 0 and math.isfinite(row[col]), col
    assert row["ours_over_asdl_lo"] <= row["ours_over_asdl"] <= row["ours_over_asdl_hi"]
