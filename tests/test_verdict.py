"""The published verdict is recomputed from the committed run files: docs/verdict/claims.csv is what
`kfac-bench report results_dir=docs/runs` computes from docs/runs/, and the README's verdict block is
its one-row-per-claim summary."""
from pathlib import Path

import pandas as pd

from kfac_bench.report import claim_engine as CE
from kfac_bench.report import claims as C
from kfac_bench.reproduce.common import README_LINE_LIMIT
from kfac_bench.reproduce.verdict import (README_CLAIMS, RUNS_ROOT, VERDICT_DIR, readme_block, replace_block,
                                      standing_row)

ROOT = Path(__file__).resolve().parent.parent


def test_published_claims_are_recomputed_from_the_committed_runs(monkeypatch):
    monkeypatch.chdir(ROOT)          # the report ran on the relative folder docs/runs
    published = (ROOT / VERDICT_DIR / "claims.csv").read_text()
    recomputed = CE.claims_table([RUNS_ROOT]).to_csv(index=False)
    assert recomputed == published


def test_no_published_row_refutes_what_the_papers_own_curves_do_not_show():
    table = pd.read_csv(ROOT / VERDICT_DIR / "claims.csv", keep_default_na=False)
    per_problem = table[(table["problem"] != CE.ALL_PROBLEMS) & (table["setting"] != "fisher study")]
    per_problem = per_problem[per_problem["id"].isin([c.id for c in C.paper_claims()])]   # C2/C3: no published curves
    decided = per_problem[per_problem["verdict"].isin([C.HOLDS, C.DOES_NOT_HOLD])]
    assert len(decided) > 10
    assert (decided["published_at_budget"] == C.HOLDS).all()


def test_the_readme_block_is_the_published_summary():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(README_CLAIMS[0]) + len(README_CLAIMS[0]):readme.index(README_CLAIMS[1])]
    summary = (ROOT / VERDICT_DIR / "claims_summary.md").read_text().strip()
    assert all(line in block.splitlines() for line in summary.splitlines())
    assert standing_row(ROOT / RUNS_ROOT) in block.splitlines()      # the row that is not a claim of the paper
    cells = [c for line in block.splitlines() if line.startswith("|") for c in line.split(" | ")]
    assert max(len(c) for c in cells) <= 202


def test_every_line_of_the_readme_block_is_short():
    """The published block (the verdict table, the row that is not a claim, the line counting the runs):
    no line over README_LINE_LIMIT characters -- the long key numbers are in docs/verdict/claims.md."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(README_CLAIMS[0]):readme.index(README_CLAIMS[1])]
    assert len(block.splitlines()) > 10
    longest = max(block.splitlines(), key=len)
    assert len(longest) <= README_LINE_LIMIT, longest


def test_the_line_counting_the_runs_stays_short_with_more_profiles():
    counts = {"ablation": 1234, "conclusion": 1234, "fair": 1234, "verdict": 1234}
    lines = readme_block("| x |", counts, dict(counts), failed={name: 123 for name in counts})
    assert "(ablation: 1234 of 1234 planned (and 123 failed), conclusion: 1234" in "\n".join(lines)
    assert max(len(line) for line in lines) <= README_LINE_LIMIT


def test_the_row_that_is_not_a_claim_stays_short(tmp_path):
    """The README row on who reaches the fair comparison's targets first: within README_LINE_LIMIT characters
    and 200 a cell with the longest method label leading everywhere (one leader for both units: said once)."""
    from test_fair import make_run
    for dataset in ("curves", "mnist", "faces"):
        for method in ("adam", "scalable_shampoo", "kfac_corrected", "kron", "deflation", "lanczos"):
            # Scalable Shampoo first per second and per epoch everywhere, the others tied
            train = [1.0, 0.3, 0.3, 0.3] if method == "scalable_shampoo" else [1.0, 0.5, 0.4, 0.3]
            make_run(tmp_path / "fair", dataset, method, "full", train, n_train=16000)
    row = standing_row(tmp_path)
    cells = row.split(" | ")
    assert cells[0] == "| –" and cells[1].startswith("*Not a claim of the paper:*")
    assert cells[2] == "(b) paper's fastest first on 0 of 3 per second, 0 of 3 per epoch"
    assert cells[-1] == "(a) s, ep.: Scalable Shampoo 3/3 (3/3 seeds); (b) s, ep.: Scalable Shampoo 3/3 (3/3) |"
    assert len(row) <= README_LINE_LIMIT and max(len(c) for c in cells) <= 200
    not_measured = "| not measured (no finished `fair` profile run of both kinds) | – | – | – |"
    assert standing_row(tmp_path / "none").endswith(not_measured)


def test_readme_block_replacement():
    text = f"a\n{README_CLAIMS[0]}\nold\n{README_CLAIMS[1]}\nb\n"
    lines = readme_block("| x |\n| y |\n\nfootnote", {"verdict": 3}, {"verdict": 126}, extra_row="| z |")
    new = replace_block(text, README_CLAIMS, lines)
    assert "old" not in new and "| x |\n| y |\n| z |\n\nfootnote" in new and "verdict: 3 of 126 planned" in new
    assert new.endswith("\nb\n")
    assert replace_block("no markers", README_CLAIMS, lines) is None
    lines = readme_block("| x |", {"fair": 170, "verdict": 3}, {"verdict": 126}, failed={"fair": 7})
    assert "(fair: 170 (and 7 failed), verdict: 3 of 126 planned)" in lines[1]


def test_publishing_leaves_no_file_of_an_older_run_set(tmp_path, monkeypatch):
    """A figure of a problem the runs no longer make (e.g. before a profile's seeds 1-2 split a problem by
    horizon) must not stay in docs/verdict/ beside the recomputed ones."""
    import kfac_bench.report as report
    from kfac_bench.reproduce.verdict import publish_verdict
    monkeypatch.chdir(tmp_path)
    (tmp_path / VERDICT_DIR).mkdir(parents=True)
    (tmp_path / VERDICT_DIR / "figure2_faces_specification.png").write_text("stale")

    def fake_report(cfg):
        Path(cfg["output_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(cfg["output_dir"]) / "claims_summary.md").write_text("| x |")
    monkeypatch.setattr(report, "build_report", fake_report)
    publish_verdict({}, readme=tmp_path / "README.md")
    assert sorted(p.name for p in (tmp_path / VERDICT_DIR).iterdir()) == ["claims_summary.md"]
