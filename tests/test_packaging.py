"""The package's set-up files agree with each other and with the layout docs/architecture.md describes."""

import configparser
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def lines(value: str) -> set[str]:
    return {line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")}


def test_environment_yml_lists_the_same_dependencies_as_setup_cfg():
    cfg = setup_cfg()
    declared = lines(cfg["options"]["install_requires"]) | lines(cfg["options.extras_require"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) == declared


def test_pinned_and_required_dependencies():
    cfg = setup_cfg()
    requires = lines(cfg["options"]["install_requires"])
    assert "mediapipe==0.10.14" in requires  # newer releases drop the offline solution models
    names = {r.split("[")[0].split("=")[0].split(">")[0].split("<")[0] for r in requires}
    for name in ("torch", "pytorch-lightning", "jsonargparse", "transformers", "numpy", "scipy",
                 "opencv-python-headless", "imageio-ffmpeg", "safetensors", "tqdm"):
        assert name in names
    assert "diffrp-nvdiffrast" in lines(cfg["options.extras_require"]["gpu"])
    for forbidden in ("torchvision", "torchaudio"):
        assert forbidden not in names


def test_console_scripts_and_layout():
    scripts = lines(setup_cfg()["options.entry_points"]["console_scripts"])
    assert "vividtalk = vividtalk.cli:main" in scripts
    assert "vividtalk-prep = data_prep.__main__:main" in scripts
    for top in ("vividtalk", "stages", "data_prep", "tests", "notebooks", "setup.cfg", "environment.yml",
                "README.md", ".ci/run"):
        assert (ROOT / top).exists(), top


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    code = [line.strip() for line in ci.splitlines() if not line.strip().startswith("#")]
    test_lines = [line for line in code if "pytest" in line]
    assert len(test_lines) == 1
    assert test_lines[0] in readme
