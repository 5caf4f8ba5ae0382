"""Calibration: temperature scaling recovers a known temperature and lowers ECE on held-out data; ECE and the
reliability bins equal their definitions; a run stores its temperature, eval and predict use it; the model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dymsta.cli import main
from dymsta.engine.calibration import TEMPERATURE_BOUNDS, TEMPERATURE_KEY, fit_temperature, nll, softmax
from dymsta.reports import ReportError, expected_calibration_error, reliability_bins


def _overconfident(n: int, k: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) and the logits ``scale * z`` a model too sure of itself would give."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    z[np.arange(n), rng.integers(0, k, n)] += 2.0  # a favourite class per row
    p = softmax(z)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return scale * z, labels


def test_fit_recovers_the_temperature_and_lowers_held_out_ece() -> None:
    logits, labels = _overconfident(4000, 6, scale=3.0, seed=0)
    fit, held = slice(0, 2000), slice(2000, 4000)
    t = fit_temperature(logits[fit], labels[fit])
    assert t == pytest.approx(3.0, rel=0.12)  # the labels were drawn at T = 3
    before = expected_calibration_error(softmax(logits[held]), labels[held])
    after = expected_calibration_error(softmax(logits[held], t), labels[held])
    assert after < 0.5 * before and before > 0.1
    assert nll(logits[held], labels[held], t) < nll(logits[held], labels[held], 1.0)
    np.testing.assert_array_equal(softmax(logits, t).argmax(1), logits.argmax(1))  # accuracy is unchanged
    grid = np.exp(np.linspace(np.log(0.5), np.log(8), 400))  # no temperature on a fine grid does better
    best = grid[np.argmin([nll(logits[fit], labels[fit], g) for g in grid])]
    assert nll(logits[fit], labels[fit], t) <= nll(logits[fit], labels[fit], best) + 1e-6


def test_underconfident_logits_get_a_temperature_below_one() -> None:
    logits, labels = _overconfident(3000, 4, scale=0.4, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(0.4, rel=0.15)


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int))
    separable = np.array([[5.0, 0.0], [0.0, 5.0]])
    lo, _ = TEMPERATURE_BOUNDS
    assert lo <= fit_temperature(separable, np.array([0, 1])) < 0.2  # no errors: sharper, but bounded


def _naive_ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    total = 0.0
    conf, pred = probs.max(1), probs.argmax(1)
    for m in range(bins):
        lo, hi = m / bins, (m + 1) / bins
        inside = [i for i in range(len(conf)) if (lo < conf[i] <= hi) or (m == 0 and conf[i] == 0.0)]
        if inside:
            acc = np.mean([pred[i] == labels[i] for i in inside])
            total += len(inside) / len(conf) * abs(acc - np.mean(conf[inside]))
    return total


def test_ece_equals_its_definition() -> None:
    rng = np.random.default_rng(3)
    probs = softmax(rng.normal(0, 2, (500, 5)))
    labels = rng.integers(0, 5, 500)
    for bins in (1, 10, 15):
        assert expected_calibration_error(probs, labels, bins=bins) == pytest.approx(_naive_ece(probs, labels, bins))
    edge = np.array([[1 / 3, 1 / 3, 1 / 3], [0.8, 0.2, 0.0]])  # top 1/3 -> bin 5 of 15; 0.8 -> bin 12 (right-closed)
    table = reliability_bins(edge, np.array([0, 0]), bins=15)
    assert table["count"][4] == 1 and table["count"][11] == 1 and sum(table["count"]) == 2
    perfect = np.eye(4)[[0, 1, 2, 3]]
    assert expected_calibration_error(perfect, np.arange(4)) == 0.0
    assert expected_calibration_error(perfect, np.array([1, 2, 3, 0])) == 1.0
    with pytest.raises(ReportError):
        reliability_bins(probs, labels, bins=0)


# ------------------------------------------------------------------------------------- a trained run


def test_run_stores_its_temperature_and_reports_ece(colour_run: dict) -> None:
    from dymsta.models import load_model

    run = colour_run["run"]
    _, meta = load_model(run / "checkpoints" / "best.safetensors")
    t = json.loads(meta[TEMPERATURE_KEY])
    report = json.loads((run / "report.json").read_text())
    cal = report["calibration"]
    assert cal["temperature"] == pytest.approx(t) and cal["fitted_on"] == "val" and cal["bins"] == 15
    assert cal["fitted_videos"] == 9
    for key in ("ece_val_before", "ece_val_after", "ece_test_before", "ece_test_after"):
        assert 0.0 <= cal[key] <= 1.0, key
    assert cal["ece_val_after"] <= cal["ece_val_before"]  # what the fit minimises the NLL of, on its own split
    assert sum(cal["reliability_after"]["count"]) == report["num_videos"]
    assert (run / "plots" / "reliability.png").stat().st_size > 1000
    assert "Expected calibration error" in (run / "report.md").read_text()
    assert json.loads((run / "summary.json").read_text())["calibration_temperature"] == pytest.approx(t)


def test_predict_and_eval_use_the_temperature(colour_run: dict, tmp_path: Path) -> None:
    from dymsta.engine.predict import Predictor

    run = colour_run["run"]
    predictor = Predictor.from_checkpoint(run, device="cpu")
    video = colour_run["test_videos"][0]
    streams, _ = predictor.spec.dataset().load_record(_record(video))
    from dymsta.data.transforms import frames_to_input

    batch = frames_to_input({k: v[None] for k, v in streams.items()}, mean=predictor.spec.mean, std=predictor.spec.std)
    with torch.no_grad():
        logits = predictor.model(batch).double().numpy()
    result = next(predictor.predict_files([video], top_k=3, workers=0))
    expected = softmax(logits, predictor.temperature)[0]
    got = {p["label"]: p["score"] for p in result["predictions"]}
    for i, name in enumerate(predictor.class_names):
        assert got[name] == pytest.approx(expected[i], abs=2e-6)
    assert predictor.temperature != 1.0  # the fitted value, not the default
    assert main(["eval", str(run), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert ev["calibration"]["temperature"] == pytest.approx(predictor.temperature)
    assert (tmp_path / "ev" / "plots" / "reliability.png").is_file()


def _record(path: Path):
    from dymsta.data import VideoRecord, probe_video

    info = probe_video(path)
    return VideoRecord(str(path), 0, str(path), "", info.num_frames, info.fps, info.header_frames)


def test_model_card_front_matter_and_sections(colour_run: dict) -> None:
    text = (colour_run["run"] / "MODEL_CARD.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["pipeline_tag"] == "video-classification" and front["library_name"] == "dymsta"
    assert len(front["tags"]) == len(set(front["tags"]))
    result = front["model-index"][0]["results"][0]
    assert result["task"]["type"] == "video-classification"
    assert result["dataset"]["args"] == {"clips": 1, "crops": 1, "frames": 8}
    metrics = {m["type"]: m for m in result["metrics"]}
    report = json.loads((colour_run["run"] / "report.json").read_text())
    assert metrics["accuracy"]["value"] == pytest.approx(report["accuracy"], abs=1e-4)
    assert metrics["top_5_accuracy"]["value"] == pytest.approx(report["top5_accuracy"], abs=1e-4)
    assert metrics["f1"]["value"] == pytest.approx(report["macro_avg"]["f1"], abs=1e-4)
    assert "1 clip x 1 crop" in metrics["accuracy"]["name"]
    for section in ("## Results", "## Data", "## Recipe", "## Calibration", "## Known limitations"):
        assert section in text, section
    assert "24 train / 9 validation / 6 test" in text
    assert "`blue`, `green`, `red`" in text


def test_model_card_without_a_test_split() -> None:
    from dymsta.config import Config, config_to_dict
    from dymsta.reports.model_card import format_model_card

    text = format_model_card(
        name="m", config=config_to_dict(Config()), class_names=["a", "b"], counts={"train": 5, "val": 0, "test": 0}
    )
    front = yaml.safe_load(text.split("---\n")[1])
    assert "model-index" not in front and "## Results" not in text
    assert "No validation split" in text and "Small training set (5 videos)" in text
