"""Tactile force calibration on top of the baseline recording: the scale from a known reference load,
dead and noisy taxels, the file the tactile node loads; the CLI against the pty sensor emulator
(the real serial path), with the operator's "place the load" step simulated at the prompt."""
import builtins
from pathlib import Path

import numpy as np
import pytest
import yaml

from robot_rl.calibration.files import CalibrationError
from robot_rl.calibration.tactile import scale_from_reference, taxel_health
from robot_rl.cli.main import main
from robot_rl.drivers.tactile import Calibration
from robot_rl.drivers.tactile.emulator import TactileEmulator

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]
ROWS, COLS = 4, 4


def frames(n, mean, noise, rng):
    return mean + rng.normal(0.0, 1.0, (n, ROWS, COLS)) * noise


def test_dead_and_noisy_taxels_are_found():
    rng = np.random.default_rng(0)
    mean = np.full((ROWS, COLS), 300.0)
    noise = np.full((ROWS, COLS), 1.5)
    noise[1, 2] = 25.0  # a flaky taxel
    base = frames(300, mean, noise, rng)
    base[:, 0, 3] = 4095.0  # stuck at the rail
    gain = rng.uniform(0.8, 1.2, (ROWS, COLS))
    response = 60.0 * gain
    response[2, 1] = 0.5  # wire broken: no response under load
    loaded = frames(300, mean + response, noise, rng)
    loaded[:, 0, 3] = 4095.0
    health = taxel_health(base, loaded)
    assert health["dead"] == [[0, 3], [2, 1]] and health["noisy"] == [[1, 2]]
    assert taxel_health(base)["dead"] == [[0, 3]]  # without a load only rail-stuck taxels are known dead

    cal = scale_from_reference(base, loaded, load_newtons=4.905)
    assert cal.units == "N" and cal.scale[0, 3] == 0 and cal.scale[2, 1] == 0
    assert float(cal.apply(loaded.mean(axis=0).astype(np.float32)).sum()) == pytest.approx(4.905, rel=1e-3)
    assert cal.meta["notes"]["dead_taxels"] == [[0, 3], [2, 1]] and cal.meta["notes"]["noisy_taxels"] == [[1, 2]]

    flat = scale_from_reference(base, loaded, load_newtons=16 * 0.5, per_taxel=True)  # 0.5 N on every taxel
    per_taxel = flat.apply(loaded.mean(axis=0).astype(np.float32))
    live = np.ones((ROWS, COLS), bool)
    live[0, 3] = live[2, 1] = False
    assert np.allclose(per_taxel[live], 8.0 / 14, rtol=1e-3) and per_taxel[0, 3] == per_taxel[2, 1] == 0


def test_bad_reference_recordings_fail_with_advice():
    rng = np.random.default_rng(1)
    base = frames(200, np.full((ROWS, COLS), 300.0), 2.0, rng)
    same = frames(200, np.full((ROWS, COLS), 300.3), 2.0, rng)
    with pytest.raises(CalibrationError, match="within the noise: use a heavier reference load"):
        scale_from_reference(base, same, 4.9)
    with pytest.raises(CalibrationError, match="positive force in newtons"):
        scale_from_reference(base, same + 50, 0.0)
    with pytest.raises(CalibrationError, match="at least 2 baseline frames"):
        taxel_health(base[:1])


def test_cli_calibrates_the_serial_sensor_file_the_node_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBOT_RL_CALIBRATION_DIR", str(tmp_path / "cal"))
    gain = np.linspace(0.8, 1.2, ROWS * COLS).reshape(ROWS, COLS)
    with TactileEmulator(ROWS, COLS, 500.0, noise=1.0, seed=3) as emu:
        profile = tmp_path / "bench.yaml"
        data = yaml.safe_load((ROOT / "hardware" / "profiles" / "sim.yaml").read_text())
        data.update(name="tactile_bench", cameras=[], nodes=[])
        data["tactile"] = [{"name": "left", "rows": ROWS, "cols": COLS, "rate_hz": 500.0, "port": emu.path}]
        profile.write_text(yaml.safe_dump(data, sort_keys=False))

        def place_load(prompt: str) -> str:
            assert "place the 2.5 N reference load" in prompt
            emu.pressure = 80.0 * gain
            return ""

        monkeypatch.setattr(builtins, "input", place_load)
        code = main(["calibrate", "tactile", "--profile", str(profile), "--sensor", "left", "--load-newtons", "2.5",
                     "--seconds", "0.4"])
        assert code == 0, capsys.readouterr().err
        path = tmp_path / "cal" / "tactile_bench" / "left.yaml"
        assert f"wrote {path}" in capsys.readouterr().out
        cal = Calibration.load_or_default(path, ROWS, COLS)  # exactly what tactile_node does at start
        assert cal.units == "N" and not cal.is_default
        np.testing.assert_allclose(cal.baseline, emu.baseline, atol=0.5)
        loaded = (emu.baseline + emu.pressure).astype(np.float32)
        assert float(cal.apply(loaded).sum()) == pytest.approx(2.5, rel=0.02)
        assert yaml.safe_load(path.read_text())["notes"]["reference_load_n"] == 2.5

    assert main(["calibrate", "tactile", "--profile", "sim", "--sensor", "left_finger", "--load-newtons", "1"]) == 1
    err = capsys.readouterr().err
    assert "has no serial port" in err and "no file written" in err
