"""The evidence study's pieces (benchmarks/evidence.py): statistics on planted zoos whose taus
are known, the training criterion, the published measures on hand-built networks, the shared
probes and label noise, the tokenizer the script writes. No full run here."""

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import concept_tracker as ct

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import evidence  # noqa: E402


def planted_zoo(gap_of, readings_of, seeds=(0, 1), tasks=("digits", "planted")) -> list[dict]:
    """Every configuration of the tasks' grids, each seed a model; gap and readings per config
    (``readings_of(config, seed)``)."""
    models = []
    for task in tasks:
        axes = evidence.AXES[task]
        for values in itertools.product(*axes.values()):
            config = {"task": task, **evidence.FIXED[task], **dict(zip(axes, values))}
            for seed in seeds:
                readings = {name: 0.0 for name in evidence.ORIENTATION}
                readings.update(readings_of(config, seed))
                gap = gap_of(config, seed)
                models.append({"config": config, "seed": seed, "converged": True, "gap_error": gap,
                               "gap_loss": gap, "test_error": gap, "train_loss": 0.0, "readings": readings})
    return models


def level(config: dict, axis: str) -> int:
    return evidence.AXES[config["task"]][axis].index(config[axis])


def test_groups_differ_in_exactly_one_axis_within_a_task():
    configs = evidence.config_means(planted_zoo(lambda c, s: 0.0, lambda c, s: {}))
    for axis in evidence.AXES["digits"]:
        groups = evidence.axis_groups(configs, axis)
        assert len(groups) == 2 * 2 ** (len(evidence.AXES["digits"]) - 1)
        for g in groups:
            a, b = (configs[i]["config"] for i in g)
            assert [k for k in a if a[k] != b[k]] == [axis]


def test_config_means_average_the_seeds():
    models = planted_zoo(lambda c, s: float(s), lambda c, s: {"spindle": 10.0 * s}, seeds=(0, 1, 2))
    configs = evidence.config_means(models)
    assert len(configs) == len(models) // 3
    assert all(c["gap_error"] == pytest.approx(1.0) and c["readings"]["spindle"] == pytest.approx(10.0)
               for c in configs)


def test_granulated_tau_and_psi_isolate_the_axis_that_moves_the_gap():
    # The gap grows with depth and, less, with label noise; "concepts" reads depth only,
    # "margin" (oriented -1) reads label noise with the sign that predicts a larger gap.
    def gap(c, s):
        return 2.0 * level(c, "depth") + level(c, "label_noise") + 0.01 * s

    def readings(c, s):
        return {"concepts": float(level(c, "depth")), "margin": -float(level(c, "label_noise"))}

    out = evidence.analyse(planted_zoo(gap, readings, tasks=("digits",)), reps=3)
    g = out["granulated"]["gap_error"]
    assert g["concepts"]["depth"]["tau"] == pytest.approx(1.0)
    assert math.isnan(g["concepts"]["label_noise"]["tau"])  # ties: no information
    assert g["margin"]["label_noise"]["tau"] == pytest.approx(1.0)
    assert math.isnan(g["margin"]["train_size"]["tau"])
    # Psi is the mean over the axes where the measure is defined: 1 for both here
    assert out["psi"]["gap_error"]["concepts"]["psi"] == pytest.approx(1.0)
    assert out["label_noise"]["margin"] == pytest.approx(1.0)


def test_orientation_is_applied_before_the_tau():
    models = planted_zoo(lambda c, s: float(level(c, "train_size")),
                         lambda c, s: {"simple_share": float(level(c, "train_size"))}, tasks=("digits",))
    out = evidence.analyse(models, reps=3)
    assert out["granulated"]["gap_error"]["simple_share"]["train_size"]["tau"] == pytest.approx(-1.0)
    assert out["overall"]["gap_error"]["simple_share"]["tau"] == pytest.approx(-1.0)


def test_overall_tau_is_the_mean_over_tasks():
    # On digits the reading follows the gap, on planted it is reversed: the mean is 0.
    def readings(c, s):
        return {"spindle": float(s) if c["task"] == "digits" else -float(s)}

    models = planted_zoo(lambda c, s: float(s), readings)
    assert evidence.overall_tau(models, "spindle", "gap_error") == pytest.approx(0.0)
    digits = [m for m in models if m["config"]["task"] == "digits"]
    assert evidence.overall_tau(digits, "spindle", "gap_error") == pytest.approx(1.0)


def test_resamples_draw_whole_configurations():
    models = planted_zoo(lambda c, s: 0.0, lambda c, s: {}, seeds=(0, 1, 2))
    rng = np.random.default_rng(0)
    for sample in evidence.config_resamples(models, 5, rng):
        assert len(sample) == len(models)
        counts: dict = {}
        for m in sample:
            counts.setdefault(evidence.config_key(m["config"]), []).append(m["seed"])
        # every drawn configuration brings all three seeds, once per draw
        assert all(sorted(seeds) == sorted([0, 1, 2] * (len(seeds) // 3)) for seeds in counts.values())
        assert {m["config"]["task"] for m in sample} == {"digits", "planted"}


def test_kendall_matches_scipy_with_ties():
    from scipy import stats

    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, 12).astype(float), rng.integers(0, 5, 12).astype(float)
        assert evidence.kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert evidence.kendall(np.array([1.0, 2.0]), np.array([5.0, 3.0])) == -1.0
    assert math.isnan(evidence.kendall(np.array([1.0, 1.0]), np.array([5.0, 3.0])))
    assert evidence.kendall(np.array([1.0, np.nan, 2.0]), np.array([0.0, 9.0, 1.0])) == 1.0


def test_best_of_repeats_the_pick_in_every_replicate():
    psis = {"a": np.array([0.1, 0.5, np.nan]), "b": np.array([0.3, 0.2, 0.4])}
    assert evidence.best_of(psis, ["a", "b"]).tolist() == [0.3, 0.5, 0.4]


def test_non_converged_models_are_reported_and_left_out():
    models = planted_zoo(lambda c, s: float(level(c, "depth")), lambda c, s: {"concepts": float(level(c, "depth"))},
                         tasks=("digits",))
    models[0]["converged"] = False
    models[0]["readings"] = {}
    out = evidence.analyse(models, reps=3)
    assert out["zoo"]["converged"] == len(models) - 1
    assert out["zoo"]["not_converged"][0]["config"] == models[0]["config"]
    assert out["granulated"]["gap_error"]["concepts"]["depth"]["tau"] == pytest.approx(1.0)


def test_tuning_split_halves_the_configurations_of_each_task():
    configs = evidence.config_means(planted_zoo(lambda c, s: 0.0, lambda c, s: {}))
    tune, score = evidence.tuning_split(configs)
    assert not tune & score
    for task in ("digits", "planted"):
        keys = {evidence.config_key(c["config"]) for c in configs if c["config"]["task"] == task}
        assert len(tune & keys) == len(keys) // 2 and (tune | score) >= keys


def test_disagreement_pairs_each_seed_with_the_next():
    base = {"config": {"task": "digits"}, "converged": True}
    models = [{**base, "seed": s, "readings": {}, "test_predictions": p}
              for s, p in enumerate([[0, 0, 0, 0], [0, 0, 1, 1], [1, 0, 1, 1]])]
    evidence.add_disagreement(models)
    assert [m["readings"]["disagreement"] for m in models] == [0.5, 0.25, 0.75]
    assert all("test_predictions" not in m for m in models)


def test_training_stops_at_the_criterion_or_the_cap():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = evidence.build_mlp(4, 2, 16, 1)
    step = evidence.train_mlp(model, x, y, 5e-2, seed=0, cap=1000)
    assert step is not None and step % evidence.CHECK_EVERY == 0
    assert evidence.loss_and_error(model, x, y)[0] <= evidence.CE_TARGET
    torch.manual_seed(0)
    assert evidence.train_mlp(evidence.build_mlp(4, 2, 16, 1), x, y, 1e-2, seed=0, cap=5) is None


def two_layer(w1, w2) -> nn.Sequential:
    model = evidence.build_mlp(len(w1[0]), len(w2), len(w1), 1)
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor(w1, dtype=torch.float32))
        model[1].bias.zero_()
        model[3].weight.copy_(torch.tensor(w2, dtype=torch.float32))
        model[3].bias.zero_()
    return model


def test_norm_measures_on_a_hand_built_network():
    # W1 = diag(3, 1), W2 = [[2, 0], [0, 0.5]]: spectral norms 3 and 2, Frobenius^2 10 and 4.25;
    # paths: (3*2)^2 + (1*0.5)^2 = 36.25.
    model = two_layer([[3.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 0.5]])
    assert evidence.log_norm_product(model, 2) == pytest.approx(math.log(9 * 4), rel=1e-6)
    assert evidence.log_norm_product(model, "fro") == pytest.approx(math.log(10 * 4.25), rel=1e-6)
    assert evidence.log_path_norm(model) == pytest.approx(math.log(36.25), rel=1e-6)


def test_margin_and_the_margin_normalised_measures(monkeypatch):
    monkeypatch.setattr(evidence, "ww_alpha_weighted", lambda model: math.nan)  # importing it is slow
    z = torch.tensor([[3.0, 1.0], [0.0, 2.0], [5.0, 0.0], [1.0, 1.5]])
    y = torch.tensor([0, 1, 0, 0])
    # margins 2, 2, 5, -0.5; 10th percentile (linear interpolation) = -0.5 + 0.3 * 2.5 = 0.25
    assert evidence.margin_10(z, y) == pytest.approx(0.25)
    model = two_layer([[3.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 0.5]])
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.1]])
    labels = torch.zeros(3, dtype=torch.long)
    out = evidence.published(model, x, labels)
    margin = evidence.margin_10(evidence.logits_of(model, x), labels)
    assert out["spectral_margin"] == pytest.approx(math.log(36) - 2 * math.log(margin), rel=1e-6)
    assert out["spectral_margin_m"] == pytest.approx(out["spectral_margin"] - math.log(3))
    assert out["flatness_m"] == pytest.approx(out["flatness"] - math.log(3))


def test_flatness_grows_with_sharpness():
    # Scaling the first layer down and the second up keeps the function but makes the model
    # sharper to isotropic weight noise: larger 1/sigma^2.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=gen)
    y = (x[:, 0] > 0).long()
    flat = two_layer([[1.0, 0.0], [-1.0, 0.0]], [[-1.0, 1.0], [1.0, -1.0]])
    sharp = two_layer([[0.1, 0.0], [-0.1, 0.0]], [[-10.0, 10.0], [10.0, -10.0]])
    assert evidence.loss_and_error(flat, x, y)[1] == 0.0
    assert torch.equal(evidence.logits_of(flat, x).argmax(1), evidence.logits_of(sharp, x).argmax(1))
    assert evidence.log_flatness(sharp, x, y) > evidence.log_flatness(flat, x, y) + 1.0


def test_probes_and_label_noise_are_shared_by_every_model():
    labels = torch.arange(5).repeat(40)
    picked = evidence.per_class_draw(labels, 7, seed=0)
    assert torch.bincount(labels[picked]).tolist() == [7] * 5
    noisy = evidence.noisy_labels(labels, (0.0, 0.3), classes=5)
    assert torch.equal(noisy[0.0], labels)
    changed = noisy[0.3] != labels
    assert 0.2 < changed.double().mean() < 0.4  # a replacement never hits the true class


def test_planted_task_probes_come_from_the_smallest_training_set():
    task = evidence.planted_task()
    small = min(evidence.AXES["planted"]["train_size"])
    assert task.probe_idx.max() < small
    assert torch.bincount(task.pool_y[task.probe_idx]).tolist() == [evidence.PROBES_PER_CLASS] * 2
    assert torch.equal(evidence.planted_rule(task.test_x), task.test_y)


def test_words_tokenizer_from_the_written_vocabulary(tmp_path):
    pytest.importorskip("transformers")
    task = evidence.words_task(tmp_path)
    assert (tmp_path / "vocab.txt").exists()
    ids = task.pool_x.long()
    assert ids.shape[1] == evidence.WORD_SLOTS + 2
    assert ids[:, 1:-1].min() >= len(evidence.SPECIALS)  # every word is its own token, no [UNK]
    assert 0.35 < task.pool_y.double().mean() < 0.65
    task.players.prepare(task.pool_x)
    masked = task.players.mask(task.pool_x[0], torch.zeros(1, evidence.WORD_PLAYERS, dtype=torch.bool))
    players = slice(1, 1 + evidence.WORD_PLAYERS)
    assert masked[0, players].eq(4).all()  # the player words -> [MASK]
    assert torch.equal(masked[0, 1 + evidence.WORD_PLAYERS :], task.pool_x[0, 1 + evidence.WORD_PLAYERS :])


def test_summary_line_keeps_the_contract():
    import json

    models = planted_zoo(lambda c, s: float(level(c, "depth")), lambda c, s: {}, tasks=("digits",))
    out = evidence.analyse(models, reps=3)
    line = json.loads(evidence.summary_line(models, out))
    assert {"models", "primary", "tau", "psi", "ours", "baselines"} <= set(line)
    assert line["primary"] == evidence.PRIMARY and evidence.PRIMARY in line["ours"]
    assert set(line["tau"]) == set(line["psi"]) == set(evidence.ORIENTATION)
    assert "disagreement" not in line["baselines"]


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "evidence_results.json"


def outside_blocks(text: str) -> str:
    """``text`` without the generated blocks."""
    import re

    return re.sub(r"<!-- evidence:(\w+) -->.*?<!-- /evidence:\1 -->", "", text, flags=re.S)


def test_docs_and_readme_are_generated_from_the_committed_results():
    import json
    import re

    saved = json.loads(RESULTS.read_text())
    quick = json.loads((ROOT / "docs" / "evidence_quick.json").read_text())
    assert quick["quick"] and quick["stats"]["zoo"]["models"] >= 20
    blocks = evidence.markdown_blocks(saved, quick)
    for path, names in ((ROOT / "docs" / "evidence.md", evidence.DOC_BLOCKS),
                        (ROOT / "README.md", ("readme",))):
        text = path.read_text()
        assert evidence.replace_blocks(text, {n: blocks[n] for n in names}) == text, (
            f"{path.name} differs from its results; run python benchmarks/evidence.py --docs {RESULTS.relative_to(ROOT)}"
        )
    # no figure typed by hand next to them: signed two-decimal numbers live in the blocks only
    # this study's sections (the page ends with other studies' sections, checked by their tests)
    doc = outside_blocks((ROOT / "docs" / "evidence.md").read_text().split("## Reproduce")[0])
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Do the readings predict generalization?")[1].split("\n## ")[0]
    for text in (doc, outside_blocks(section)):
        assert not re.findall(r"[+−-]\d\.\d\d", text)


def test_committed_results_recompute():
    # The point estimates in the committed file follow from its own model records.
    import json

    saved = json.loads(RESULTS.read_text())
    assert saved["primary"] == evidence.PRIMARY and not saved["quick"]
    out = evidence.analyse(saved["models"], reps=2)
    for name in evidence.ORIENTATION:
        for key, stat in (("psi", "psi"), ("overall", "tau")):
            got, want = out[key]["gap_error"][name][stat], saved["stats"][key]["gap_error"][name][stat]
            assert (want is None and math.isnan(got)) or got == pytest.approx(want, abs=1e-9)
    # and so do the sampled readings' agreement with their exact twins
    for name, info in saved["stats"]["sampled"]["readings"].items():
        for task, tau in info["rank_agreement"].items():
            got = out["sampled"]["readings"][name]["rank_agreement"][task]
            assert (tau is None and math.isnan(got)) or got == pytest.approx(tau, abs=1e-9)
    assert out["sampled"]["forwards_fraction"] == pytest.approx(saved["stats"]["sampled"]["forwards_fraction"])


# ---------------------------------------------------------------- the sampled readings


def test_sampled_readings_are_secondary_and_each_has_an_exact_twin():
    assert evidence.PRIMARY not in evidence.SAMPLED and not set(evidence.SAMPLED) & set(evidence.OURS)
    for name, twin in evidence.SAMPLED.items():
        assert twin in evidence.OURS and evidence.ORIENTATION[name][0] == evidence.ORIENTATION[twin][0]
        assert evidence.kind_of(name) == "ours, sampled"
    assert set(evidence.MEASURES) == set(evidence.ORIENTATION)


def test_sampled_readings_at_every_forward_equal_the_exact_ones(monkeypatch):
    """With 2**n forwards per probe the spectrum evaluates every coalition: its shares are the
    exact readings; at a quarter of them it runs at most a quarter of the exact forwards."""
    task = evidence.planted_task()
    torch.manual_seed(0)
    model = evidence.build_mlp(10, 2, 16, 1)
    init = ct.compute_interactions(model, task.pool_x[:2], task.players)
    exact = evidence.ours(model, task, init)
    monkeypatch.setattr(evidence, "SAMPLED_FRACTION", 1)
    full, cost = evidence.sampled_readings(model, task)
    assert full["sampled_simple_share"] == pytest.approx(exact["simple_share"], abs=1e-9)
    assert full["sampled_complex_share"] == pytest.approx(exact["complex_ratio"], abs=1e-9)
    assert cost["forwards"] == cost["exact_forwards"] == 2**10 * len(task.probe_idx)
    monkeypatch.setattr(evidence, "SAMPLED_FRACTION", 4)
    quarter, cost = evidence.sampled_readings(model, task)
    assert cost["forwards"] <= cost["exact_forwards"] // 4
    assert all(0.0 <= v <= 1.0 for v in quarter.values())


def test_sampled_agreement_ranks_each_reading_against_its_twin():
    def readings(c, s):
        share = level(c, "train_size") + 0.1 * level(c, "label_noise") + 0.01 * s
        # the sampled simple share follows its twin; the sampled complex share reverses it
        return {"simple_share": share, "sampled_simple_share": 2 * share + 1,
                "complex_ratio": share, "sampled_complex_share": -share}

    models = planted_zoo(lambda c, s: 0.0, readings)
    for m in models:
        m["sampled_cost"] = {"forwards": 250, "exact_forwards": 1000}
    out = evidence.analyse(models, reps=3)["sampled"]
    assert out["forwards_fraction"] == pytest.approx(0.25)
    simple, complex_ = (out["readings"][n]["rank_agreement"] for n in evidence.SAMPLED)
    assert simple == {"digits": pytest.approx(1.0), "planted": pytest.approx(1.0)}
    assert complex_ == {"digits": pytest.approx(-1.0), "planted": pytest.approx(-1.0)}
