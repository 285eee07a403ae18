"""The sglang-mtp command line: convert, generate, help and one-line errors."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sglang_mtp.cli import COMMANDS, main
from sglang_mtp.decode import UntrainedMTPWarning, generate
from tests.models import save_checkpoint, tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PROMPT = "The sum of 12 and 7 is"


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()  # `generate --threads 1` sets it process-wide
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A plain tiny Llama checkpoint and its `sglang-mtp convert` output."""
    root = tmp_path_factory.mktemp("cli")
    save_checkpoint(root / "plain", tiny_model("llama", vocab_size=100), tiny_tokenizer())
    assert main(["convert", "--model", str(root / "plain"), "--out", str(root / "mtp")]) == 0
    return root / "plain", root / "mtp"


def cli(capsys, *args):
    code = main(["generate", "--threads", "1", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def reference(path, spec, max_new):
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with warnings.catch_warnings():  # the CLI's own warning is what the tests check
        warnings.simplefilter("ignore", UntrainedMTPWarning)
        r = generate(model, [tok(PROMPT)["input_ids"]], spec, max_new_tokens=max_new)[0]
    return r, tok.decode(r.tokens, skip_special_tokens=True)


@pytest.mark.parametrize("module", ["sglang_mtp", "sglang_mtp.cli"])
def test_help_lists_every_subcommand(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", proc.stdout, re.M), name


def test_convert_output_is_loadable(checkpoints, capsys):
    _, mtp = checkpoints
    assert AutoModelForCausalLM.from_pretrained(mtp).config.mtp_mask_token_id == 100
    assert main(["convert", "--model", str(mtp), "--out", str(mtp)]) == 2
    assert "--out must differ from --model" in capsys.readouterr().err


def test_generate_prints_the_reference_continuation(checkpoints, capsys):
    _, mtp = checkpoints
    code, out, err = cli(capsys, "--model", mtp, "--prompt", PROMPT, "--strategy", "static", "--k-max", 3,
                         "--max-new-tokens", 12)
    assert code == 0
    assert out == reference(mtp, "static:3", 12)[1] + "\n"
    assert "not MTP-trained" in err and len(err.strip().splitlines()) == 1  # one clear warning line


def test_show_chunks_colours_one_chunk_per_pass_and_compare(checkpoints, capsys):
    _, mtp = checkpoints
    code, out, err = cli(capsys, "--model", mtp, "--prompt", PROMPT, "--strategy", "conf_adapt",
                         "--threshold", 0.3, "--k-max", 6, "--max-new-tokens", 20, "--show-chunks", "--compare")
    assert code == 0
    r, text = reference(mtp, "conf_adapt:0.3:6", 20)
    lines = out.splitlines()
    assert ANSI.sub("", lines[0]) == text
    assert len(re.findall(r"\x1b\[30;4\dm", lines[0])) == r.passes  # one colour run per forward pass
    assert re.fullmatch(rf"\[conf_adapt tau=0.3 k_max=6\] {len(r.tokens)} tokens, {r.passes} passes, "
                        rf"effective k {r.effective_k:.2f}, [\d.]+ tokens/s, [\d.]+ s", lines[1])
    assert re.fullmatch(r"\[ntp\] \d+ tokens, \d+ passes, effective k 1.00, .*", lines[2])
    assert re.fullmatch(r"speed-up over ntp: [\d.]+x tokens/s, [\d.]+x fewer forward passes; "
                        r"output identical to ntp for [01]/1 prompt\(s\)", lines[3])


def test_verify_matches_ntp_and_needs_no_warning(checkpoints, capsys):
    _, mtp = checkpoints
    code, out, err = cli(capsys, "--model", mtp, "--prompt", PROMPT, "--prompt", "abc", "--strategy", "verify",
                         "--k-max", 4, "--max-new-tokens", 10, "--compare")
    assert code == 0 and err == ""
    assert out.splitlines()[0].startswith("[0] ") and out.splitlines()[1].startswith("[1] ")
    assert "output identical to ntp for 2/2 prompt(s)" in out


@pytest.mark.parametrize("which,args,message", [
    ("mtp", ["--threshold", "1.5"], "--threshold must be in [0, 1], got 1.5"),
    ("mtp", ["--threshold", "-0.1"], "--threshold must be in [0, 1], got -0.1"),
    ("mtp", ["--k-max", "0"], "--k-max must be in [1, 64], got 0"),
    ("missing", [], "is not a Hugging Face checkpoint (no config.json)"),
    ("plain", ["--strategy", "static", "--k", "2"], "has no <MTP> mask token"),
    ("plain", ["--strategy", "conf_adapt"], "has no <MTP> mask token"),
])
def test_generate_errors_are_one_line(checkpoints, capsys, which, args, message):
    plain, mtp = checkpoints
    path = {"mtp": mtp, "plain": plain, "missing": mtp.parent / "missing"}[which]
    code, out, err = cli(capsys, "--model", path, "--prompt", PROMPT, *args)
    assert code == 2 and out == ""
    assert err.startswith("sglang-mtp generate: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_plain_model_still_decodes_with_ntp(checkpoints, capsys):
    plain, _ = checkpoints
    code, out, _ = cli(capsys, "--model", plain, "--prompt", PROMPT, "--strategy", "ntp", "--max-new-tokens", 5)
    assert code == 0 and out.strip() == reference(plain, "ntp", 5)[1].strip()


def test_convert_missing_path_and_bad_command(tmp_path, capsys):
    assert main(["convert", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "sglang-mtp convert: error: model path" in capsys.readouterr().err
    assert main(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    assert main([]) == 2


def test_untrained_flag_flips_after_training_marks_it(checkpoints, tmp_path, capsys):
    _, mtp = checkpoints
    model = AutoModelForCausalLM.from_pretrained(mtp)
    model.config.mtp_trained = True
    save_checkpoint(tmp_path / "trained", model, AutoTokenizer.from_pretrained(mtp))
    code, _, err = cli(capsys, "--model", tmp_path / "trained", "--prompt", PROMPT, "--max-new-tokens", 4)
    assert code == 0 and err == ""
