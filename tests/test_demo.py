"""The README's main job (`sglang-mtp demo`) end to end, on a quick toy checkpoint."""

import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def quick_toy(tmp_path_factory):
    cache = tmp_path_factory.mktemp("toy")
    subprocess.run([sys.executable, "-m", "sglang_mtp", "toy", "--quick", "--cache-dir", str(cache),
                    "--until", "mtp", "--no-progress"], check=True, capture_output=True)
    return str(cache / "mtp")


def run_demo(model, *extra):
    return subprocess.run([sys.executable, "-m", "sglang_mtp", "demo", "--model", model, "--num-prompts", "3",
                           "--k-max", "4", "--max-new-tokens", "12", *extra], capture_output=True, text=True)


def test_demo_reference_part(quick_toy):
    out = run_demo(quick_toy, "--no-engine")
    assert out.returncode == 0, out.stderr
    assert "[ntp] 36 tokens, 36 passes" in out.stdout  # 3 prompts x 12 tokens (EOS never learned)
    assert "1 thread(s), timings: the median of 3 alternating runs" in out.stdout
    assert "[conf_adapt tau=0.9 k_max=4]" in out.stdout and "speed-up over ntp" in out.stdout
    assert "\x1b[" in out.stdout  # the coloured chunks


def test_demo_engine_matches_reference(quick_toy):
    pytest.importorskip("sglang")
    out = run_demo(quick_toy, "--show", "0")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "engine output identical to the reference decoder for 3/3 prompts" in out.stdout
    assert "1 thread(s)" in out.stdout and "median of 3 alternating runs each" in out.stdout


def test_demo_rejects_bad_arguments(quick_toy):
    out = run_demo(quick_toy, "--num-prompts", "0")
    assert out.returncode == 2 and "--num-prompts must be >= 1" in out.stderr
