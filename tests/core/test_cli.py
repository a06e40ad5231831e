"""The `medtl` command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys


def medtl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtl", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_inspect_prints_the_per_layer_table_with_provenance(repo):
    result = medtl("inspect", "solvers/tajbakhsh2016/pe/alexnet-h_fc7-fc8.solver.prototxt",
                   "--epochs", "0,5", cwd=repo)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Tajbakhsh 2016 Table II" in out
    assert "weight_decay  0.0005       assumed: not given; the bvlc_alexnet value" in out
    fc6 = next(line for line in out.splitlines() if line.startswith("fc6 "))
    assert "frozen" in fc6
    fc7 = next(line for line in out.splitlines() if line.startswith("fc7 "))
    assert "learning" in fc7 and "0.001" in fc7
    assert "parameters: 56,876,418 (16,789,506 trainable" in out


def test_inspect_json_and_diff(repo):
    a = "solvers/tajbakhsh2016/polyp/alexnet-h_conv5-fc8.solver.prototxt"
    b = "solvers/tajbakhsh2016/polyp/alexnet-h_conv4-fc8.solver.prototxt"
    result = medtl("inspect", a, "--json", cwd=repo)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {r["name"]: r["learning"] for r in data["layers"] if r["param_count"]}["conv4"] is False
    result = medtl("inspect", a, b, cwd=repo)
    assert result.returncode == 0, result.stderr
    frozen_to_tuned = "mults [[0.0, 0.0], [0.0, 0.0]] -> [[1.0, 1.0], [2.0, 0.0]]"
    assert f"layer conv4: {frozen_to_tuned}" in result.stdout
    assert "layer conv3: mults" not in result.stdout


def test_inspect_reports_a_missing_file_without_a_traceback(repo):
    result = medtl("inspect", "no/such.prototxt", cwd=repo)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no/such.prototxt: no such file"


def test_generate_check_finds_no_drift(repo):
    result = medtl("generate", "--check", cwd=repo)
    assert result.returncode == 0, result.stdout
    assert "0 canonical file(s) differ" in result.stdout


def test_weights_verify_names_expected_and_actual_sha1(tmp_path):
    fake = tmp_path / "bvlc_alexnet.caffemodel"
    fake.write_bytes(b"not AlexNet")
    result = medtl("weights", "verify", "bvlc_alexnet", str(fake))
    assert result.returncode == 2
    assert "9116a64c0fbe4459d18f4bb6b56d647b63920377" in result.stderr
    assert str(fake) in result.stderr
