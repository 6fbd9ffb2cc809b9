import pandas as pd

from detox.report import comparison_table


def test_table_aggregates_seeds_per_ratio_method_strength():
    runs = pd.DataFrame({
        "params.ratio": ["0", "0", "10", "10", "10"],
        "params.seed": ["1", "2", "1", "2", "3"],
        "params.method": ["none"] * 5,
        "params.strength": ["-"] * 5,
        "params.setting": ["a", "a", "b", "b", "b"],
        "metrics.toxigen": [40.0, 44.0, 10.0, 20.0, 30.0],
        "metrics.ce_loss": [2.0, 2.2, 2.5, 2.5, 2.5],
    })
    table = comparison_table(runs, {"toxigen": "ToxiGen %", "ce_loss": "CE loss", "missing": "absent"})
    assert list(table["ratio"]) == ["0", "10"]
    assert list(table["seeds"]) == [2, 3]
    assert list(table["ToxiGen %"]) == ["42.00 ± 2.83", "20.00 ± 10.00"]  # sample std, ddof=1
    assert list(table["CE loss"]) == ["2.10 ± 0.14", "2.50 ± 0.00"]
    assert list(table["absent"]) == ["-", "-"]


def test_ratios_sort_numerically():
    runs = pd.DataFrame({"params.ratio": ["5", "25", "10"], "params.seed": ["1"] * 3, "params.method": ["none"] * 3,
                         "params.strength": ["-"] * 3, "params.setting": ["a", "b", "c"], "metrics.toxigen": [1.0, 2.0, 3.0]})
    assert list(comparison_table(runs)["ratio"]) == ["5", "10", "25"]


def test_plot_against_ratio_writes_a_png(tmp_path):
    from detox.report import plot_against_ratio

    runs = pd.DataFrame({"params.ratio": ["0", "0", "10"], "params.seed": ["1", "2", "1"], "params.method": ["none"] * 3,
                         "params.strength": ["-"] * 3, "metrics.toxigen": [1.0, 2.0, 3.0],
                         "metrics.rtp_toxicity_probability": [1.0, 2.0, 3.0], "metrics.ce_loss": [1.0, 1.1, 1.2],
                         "metrics.implied_toxigen": [5.0, 5.0, 9.0]})
    plot_against_ratio(runs, str(tmp_path / "ratio.png"))
    assert (tmp_path / "ratio.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_of_different_configs_are_never_pooled():
    runs = pd.DataFrame({"params.ratio": ["0"] * 4, "params.seed": ["1", "2", "1", "2"], "params.method": ["none"] * 4,
                         "params.strength": ["-"] * 4, "params.setting": ["a", "a", "b", "b"],
                         "params.cfg.pretrain.model.n_layers": ["4", "4", "6", "6"],
                         "params.cfg.pretrain.seed": ["1", "2", "1", "2"], "metrics.toxigen": [1.0, 3.0, 10.0, 30.0]})
    table = comparison_table(runs, {"toxigen": "ToxiGen %"})
    assert list(table["pretrain.model.n_layers"]) == ["4", "6"]
    assert "pretrain.seed" not in table  # the seed differs within a setting: it is what is pooled
    assert list(table["ToxiGen %"]) == ["2.00 ± 1.41", "20.00 ± 14.14"]
    assert list(table["seeds"]) == [2, 2]
