"""The command line on small CSV files: fit / predict / formula / plot / info and every bad input."""

import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
from kanlab.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A CSV and a symbolic model fit from it (shared: fitting takes seconds)."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, 200), rng.uniform(0, 2, 200)
    frame = pd.DataFrame({"a": a, "b": b, "label": ["p"] * 200, "y": 2 * a + b**2})
    frame.to_csv(folder / "data.csv", index=False)
    code = main(["fit", str(folder / "data.csv"), "--target", "y", "--features", "a,b", "--width", "2",
                 "--grid", "3,5", "--steps", "20", "--symbolic", "-o", str(folder / "m.kan")])
    assert code == 0
    return folder


def test_fit_writes_model_picture_report_and_formula(workdir, capsys):
    for name in ("m.kan", "m.png", "m.json"):
        assert (workdir / name).is_file()
    report = json.loads((workdir / "m.json").read_text())
    assert report["features"] == ["a", "b"] and report["target"] == "y"
    assert report["rows"] == {"train": 160, "validation": 40, "dropped": 0}
    assert [s["stage"] for s in report["stages"]][:2] == ["train grid 3", "prune"]
    assert report["stages"][-1]["val_rmse"] < 0.05
    assert "a" in report["formula"] and "b" in report["formula"]


def test_predict_formula_info_plot(workdir, capsys):
    out = workdir / "pred.csv"
    assert main(["predict", str(workdir / "m.kan"), str(workdir / "data.csv"), "-o", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["a", "b", "label", "y", "y_predicted"]
    assert np.sqrt(np.mean((frame["y"] - frame["y_predicted"]) ** 2)) < 0.05
    capsys.readouterr()
    assert main(["formula", str(workdir / "m.kan"), "--digits", "-1"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("y = ")
    import sympy

    expr = sympy.sympify(text[4:])
    fn = sympy.lambdify(sympy.symbols("a b"), expr, "numpy")
    # the printed formula (exact digits) is the model's prediction in the data's units
    np.testing.assert_allclose(fn(frame["a"].to_numpy(), frame["b"].to_numpy()), frame["y_predicted"], rtol=1e-8, atol=1e-8)
    assert main(["formula", str(workdir / "m.kan"), "--latex"]) == 0
    assert "b^{2}" in capsys.readouterr().out
    assert main(["info", str(workdir / "m.kan")]) == 0
    info = capsys.readouterr().out
    assert "inputs    a, b" in info and "formula" in info
    assert main(["plot", str(workdir / "m.kan"), "-o", str(workdir / "pic.png")]) == 0
    assert (workdir / "pic.png").stat().st_size > 1000


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("kanlab: error: ") and err.count("\n") == 1, err
    return err


def test_bad_inputs_give_one_line_errors(workdir, tmp_path, capsys):
    data = str(workdir / "data.csv")
    fit = ["fit", data, "--target", "y", "--steps", "1", "-o", str(tmp_path / "x.kan")]
    assert "does not exist" in _error(capsys, ["fit", str(tmp_path / "nope.csv"), "--target", "y"])
    assert "'nope' is not a column" in _error(capsys, ["fit", data, "--target", "nope"])
    assert "'zzz' not in" in _error(capsys, fit + ["--features", "a,zzz"])
    assert "'label'" in _error(capsys, fit)  # every other column, including a text one
    nan = tmp_path / "nan.csv"
    frame = pd.read_csv(data).drop(columns="label")
    frame.loc[3, "a"] = np.nan
    frame.to_csv(nan, index=False)
    assert "--dropna" in _error(capsys, ["fit", str(nan), "--target", "y", "-o", str(tmp_path / "n.kan")])
    few = tmp_path / "few.csv"
    frame.tail(5).to_csv(few, index=False)
    assert "at least 10" in _error(capsys, ["fit", str(few), "--target", "y", "-o", str(tmp_path / "f.kan")])
    junk = tmp_path / "junk.kan"
    junk.write_bytes(b"not a model at all")
    assert "not a readable kanlab model" in _error(capsys, ["info", str(junk)])
    assert "does not exist" in _error(capsys, ["info", str(tmp_path / "missing.kan")])
    assert "--grid" in _error(capsys, fit + ["--grid", "5,x"])
    assert "torchrun" in _error(capsys, fit + ["--ddp"])


def test_dropna_drops_rows(tmp_path, capsys):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.uniform(-1, 1, 40), "y": rng.uniform(-1, 1, 40)})
    frame.loc[[2, 5], "a"] = np.nan
    frame.to_csv(tmp_path / "d.csv", index=False)
    code = main(["fit", str(tmp_path / "d.csv"), "--target", "y", "--dropna", "--grid", "3", "--steps", "2",
                 "-o", str(tmp_path / "d.kan")])
    assert code == 0
    assert json.loads((tmp_path / "d.json").read_text())["rows"]["dropped"] == 2


def test_nothing_is_overwritten_without_force(workdir, tmp_path, capsys):
    target = tmp_path / "m.kan"
    target.write_bytes(b"precious")
    err = _error(capsys, ["fit", str(workdir / "data.csv"), "--target", "y", "-o", str(target)])
    assert "--force" in err and target.read_bytes() == b"precious"
    picture = tmp_path / "kan.png"
    picture.write_bytes(b"mine")
    assert "--force" in _error(capsys, ["plot", str(workdir / "m.kan"), "-o", str(picture)])
    assert picture.read_bytes() == b"mine"
    assert main(["plot", str(workdir / "m.kan"), "-o", str(picture), "--force"]) == 0
    assert picture.read_bytes() != b"mine"
    pred = tmp_path / "p.csv"
    pred.write_text("keep")
    assert "--force" in _error(capsys, ["predict", str(workdir / "m.kan"), str(workdir / "data.csv"), "-o", str(pred)])
    assert pred.read_text() == "keep"


def test_no_progress_bar_on_a_pipe(workdir, tmp_path, capsys):
    code = main(["fit", str(workdir / "data.csv"), "--target", "y", "--features", "a", "--grid", "3", "--steps", "3",
                 "-o", str(tmp_path / "q.kan")])
    assert code == 0
    assert capsys.readouterr().err == ""


def test_fit_across_two_processes_with_torchrun(workdir, tmp_path):
    """The documented recipe: torchrun --nproc_per_node=2 -m kanlab fit ... --ddp (gloo, loopback)."""
    import subprocess
    import sys

    out = tmp_path / "ddp.kan"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kanlab",
               "fit", str(workdir / "data.csv"), "--target", "y", "--features", "a,b", "--grid", "3",
               "--steps", "5", "--ddp", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                          "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("train grid 3") == 1  # printed by rank 0 only
    report = json.loads((tmp_path / "ddp.json").read_text())
    assert report["stages"][-1]["val_rmse"] < 0.5 and out.is_file()


def test_predict_with_a_model_saved_from_python(tmp_path, capsys):
    import torch

    import kanlab

    model = kanlab.KAN([2, 1], grid=3, dtype=torch.float64)
    model.save(tmp_path / "py.kan")
    pd.DataFrame({"u": [0.1, 0.2], "v": [0.3, -0.4]}).to_csv(tmp_path / "two.csv", index=False)
    assert main(["predict", str(tmp_path / "py.kan"), str(tmp_path / "two.csv")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "u,v,y_1_predicted"
    pd.DataFrame({"u": [0.1]}).to_csv(tmp_path / "one.csv", index=False)
    assert "takes 2 inputs" in _error(capsys, ["predict", str(tmp_path / "py.kan"), str(tmp_path / "one.csv")])


def test_compiled_flag_builds_the_kernel_and_trains_with_it(tmp_path, monkeypatch):
    from kanlab import native

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))  # not the user's cache
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"a": rng.uniform(-1, 1, 60), "y": rng.uniform(-1, 1, 60)})
    frame.to_csv(tmp_path / "d.csv", index=False)
    with native.use(True):
        code = main(["--compiled", "fit", str(tmp_path / "d.csv"), "--target", "y", "--grid", "3", "--steps", "2",
                     "-o", str(tmp_path / "d.kan")])
    assert code == 0 and native.is_loaded()
    assert (tmp_path / "d.kan").exists()


def test_fit_at_its_defaults_then_formula_of_the_spline_model(tmp_path, capsys):
    """What a new user does first: `kanlab fit data.csv --target y`, then `kanlab formula model.kan`."""
    rng = np.random.default_rng(5)
    a, b = rng.uniform(-1, 1, 160), rng.uniform(-1, 1, 160)
    pd.DataFrame({"a": a, "b": b, "y": np.sin(2 * a) + b**2 + 0.01 * rng.normal(size=160)}).to_csv(
        tmp_path / "data.csv", index=False)
    assert main(["fit", str(tmp_path / "data.csv"), "--target", "y", "--steps", "20"]) == 0  # writes model.kan here
    report = json.loads((tmp_path / "model.json").read_text())
    grid_stages = [s for s in report["stages"] if s["stage"].startswith("train grid")]
    best = min(grid_stages, key=lambda s: s["val_rmse"])
    assert report["kept_grid"] == int(best["stage"].split()[-1]) and report["grid"] == report["kept_grid"]
    capsys.readouterr()
    assert main(["formula", "model.kan", "--steps", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("y = ") and {"a", "b"} <= {str(s) for s in __import__("sympy").sympify(lines[0][4:]).free_symbols}
    assert lines[1].startswith("validation RMSE: formula ") and ", model " in lines[1]
    formula_rmse = float(lines[1].split("formula ")[1].split(",")[0])
    assert formula_rmse < 0.1  # the snapped copy is a usable formula of sin(2a) + b^2


def test_formula_of_a_spline_model_saved_from_python(tmp_path, capsys):
    import torch

    import kanlab

    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    model = kanlab.KAN([2, 1], grid=5, dtype=torch.float64)
    model.fit((x, x[:, :1] ** 2 + x[:, 1:]), steps=10)
    model.save(tmp_path / "py.kan")
    assert main(["formula", str(tmp_path / "py.kan"), "--steps", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("y_1 = ") and "own predictions" in lines[1]
