"""param-calc command line: the done-when output, JSON, inputs, sweep/plot, and bad input (one line,
exit 2, no traceback)."""
import json
import os
import subprocess
import sys

import pytest

from param_calc.cli import build_explain_parser, build_parser, main
from param_calc.presets import PRESETS

DATA = os.path.join(os.path.dirname(__file__), "data", "param_calc")
FINLORA = os.path.join(DATA, "finetune_configs.json")
SEED_ARGS = ["--model", "llama-3.1-70b", "--rank", "4", "--targets", "q_proj,k_proj,v_proj"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(argv, capsys):
    code, out, err = run(argv + ["--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_seed_command_prints_exact_figures_and_explains_6337(capsys):
    code, out, err = run(SEED_ARGS, capsys)
    assert code == 0 and err == ""
    for s in ["11,141,120", "70,553,706,496", "6,332.7x", "139,264", "65,536", "36,864",
              "70.6B / 11.14M = 6,337.5x", "~6,337", "~6,340x", "15,728,640", "grouped-query attention"]:
        assert s in out, s


def test_json_fields(capsys):
    doc = run_json(SEED_ARGS, capsys)
    assert doc["base_params"] == 70_553_706_496
    assert doc["lora_params"] == 11_141_120
    assert doc["peft_all_params"] == 70_553_706_496 + 11_141_120
    assert round(doc["ratio"], 1) == 6332.7
    assert doc["trainable_percent"] == pytest.approx(100 * 11_141_120 / (70_553_706_496 + 11_141_120))
    assert [(r["module"], r["in"], r["out"], r["count"], r["params_per_module"], r["total"])
            for r in doc["per_module"]] == [
        ("self_attn.q_proj", 8192, 8192, 80, 65_536, 5_242_880),
        ("self_attn.k_proj", 8192, 1024, 80, 36_864, 2_949_120),
        ("self_attn.v_proj", 8192, 1024, 80, 36_864, 2_949_120)]
    assert doc["per_layer"] == 139_264
    assert doc["memory"]["bytes"]["base_weights"] == 2 * 70_553_706_496
    assert doc["memory"]["assumptions"]


def test_config_json_all_linear(capsys):
    doc = run_json(["--config", os.path.join(DATA, "llama_3_2_1b_config.json"), "--rank", "8",
                    "--targets", "all-linear"], capsys)
    assert doc["base_params"] == 1_235_814_400
    assert doc["adapted_modules"] == 7 * 16
    assert doc["lora_params"] == 16 * 8 * (2 * (2048 + 2048) + 2 * (2048 + 512) + 3 * (2048 + 8192))


def test_finlora_run(capsys):
    code, out, _ = run(["--finlora-config", FINLORA, "--run", "sentiment_llama_3_1_8b_8bits_r8"], capsys)
    assert code == 0
    assert "4,718,592" in out and "frozen base at 8 bits" in out and "alpha 16" in out
    doc = run_json(["--finlora-config", FINLORA, "--run", "headline_llama_3_1_70b_4bits_r4"], capsys)
    assert doc["lora_params"] == 11_141_120 and doc["memory"]["quant_bits"] == 4
    assert doc["memory"]["optimizer"] == "adamw-8bit" and doc["run"]["lora_alpha"] == 8
    dora = run_json(["--finlora-config", FINLORA, "--run", "ner_qwen_dora_r16"], capsys)
    assert dora["dora"] is True


def test_finlora_runs_of_the_project_count_like_the_model(capsys):
    """The project's own run file: the shipped base resolves by name, and a run's target_modules
    apply (one FinLoRA parser for param-calc and `minilora train`); counts equal the model's."""
    from minilora.adapters import LoraConfig, add_lora, lora_param_count
    from minilora.io import from_pretrained
    from minilora.runs.registry import base_dir, default_config_path

    for run_name, targets in (("sentiment_tiny_8bits_r8", ["q_proj", "k_proj", "v_proj"]),
                              ("sentiment_tiny_16bits_r8_all_linear", "all-linear")):
        doc = run_json(["--finlora-config", default_config_path(), "--run", run_name], capsys)
        model = from_pretrained(base_dir())
        add_lora(model, LoraConfig(r=8, target_modules=targets))
        assert doc["lora_params"] == lora_param_count(model), run_name
        assert doc["run"]["quant_bits"] in (8, 16)


def test_rank_overrides_finlora_rank(capsys):
    doc = run_json(["--finlora-config", FINLORA, "--run", "sentiment_llama_3_1_8b_8bits_r8", "--rank", "4"], capsys)
    assert doc["lora_params"] == 4_718_592 // 2


def test_gpt2_c_proj_and_rank_pattern(capsys):
    doc = run_json(["--model", "gpt2", "--targets", "c_proj", "--rank", "4"], capsys)
    assert {r["module"] for r in doc["per_module"]} == {"attn.c_proj", "mlp.c_proj"}
    doc = run_json(["--model", "gpt2", "--targets", "c_attn", "--rank-pattern", r"h\.0\.attn\.c_attn=16"], capsys)
    assert sorted((r["rank"], r["count"]) for r in doc["per_module"]) == [(8, 11), (16, 1)]


def test_list_models(capsys):
    code, out, _ = run(["--list-models"], capsys)
    assert code == 0 and all(name in out for name in PRESETS)
    docs = json.loads(run(["--list-models", "--json"], capsys)[1])
    assert {d["name"] for d in docs} == set(PRESETS)


def test_sweep_table(capsys):
    code, out, _ = run(["--model", "llama-3.1-8b", "--ranks", "1,2,4,8,16,64"], capsys)
    assert code == 0 and "Rank sweep" in out
    doc = run_json(["--model", "llama-3.1-8b", "--ranks", "1,2,4,8,16,64"], capsys)
    assert [r["rank"] for r in doc["sweep"]] == [1, 2, 4, 8, 16, 64]
    assert doc["sweep"][3]["lora_params"] == doc["lora_params"]      # default r = 8
    assert [r["lora_params"] for r in doc["sweep"]] == [doc["lora_params"] * k // 8 for k in (1, 2, 4, 8, 16, 64)]


def test_out_and_plot_write_atomically(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "count.json", tmp_path / "sweep.png"
    code, stdout, err = run(SEED_ARGS + ["--json", "--out", str(out), "--plot", str(png), "--ranks", "1,4,16"], capsys)
    assert code == 0, err
    assert stdout == ""
    assert json.loads(out.read_text())["lora_params"] == 11_141_120
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["count.json", "sweep.png"]   # no temp files left


def test_explain(capsys):
    code, out, _ = run(["explain"], capsys)
    assert code == 0 and "6,337" in out and "35MB" in out
    code, out, _ = run(["explain", "--topic", "gpt3"], capsys)
    assert code == 0 and "GPT-3" in out and "Llama" not in out


def test_every_flag_has_help():
    for parser in (build_parser(), build_explain_parser()):
        for action in parser._actions:
            assert action.help, action.option_strings


def test_help_exits_zero(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "--targets" in out and "param-calc explain" in out


BAD = [
    (["--model", "llama-9b"], "unknown model 'llama-9b'"),
    (SEED_ARGS[:2] + ["--rank", "0"], "--rank"),
    (SEED_ARGS[:2] + ["--rank", "-4"], "--rank"),
    (SEED_ARGS[:2] + ["--rank", "four"], "--rank"),
    (["--model", "llama-3.1-8b", "--targets", "q_proj,qkv_proj"], "unknown target 'qkv_proj'"),
    (["--model", "gpt2", "--targets", "q_proj"], "unknown target 'q_proj'"),
    (["--model", "gpt2", "--ranks", "1,0"], "--ranks"),
    (["--model", "gpt2", "--rank-pattern", "c_attn"], "--rank-pattern"),
    (["--model", "gpt2", "--rank-pattern", "c_attn=0"], "--rank-pattern"),
    (["--model", "gpt2", "--target-regex", "("], "bad target regex"),
    (["--model", "gpt2", "--plot", "chart.jpg"], "--plot"),
    (["--model", "gpt2", "--quant-bits", "3"], "--quant-bits"),
    (["--rank", "4"], "choose one model"),
    (["--model", "gpt2", "--config", "x.json"], "choose only one"),
    (["--config", "/nonexistent/config.json"], "config file not found"),
    (["--config", os.path.join(DATA, "unsupported_config.json")], "'model_type'"),
    (["--config", os.path.join(DATA, "missing_field_config.json")], "'intermediate_size'"),
    (["--config", FINLORA], "missing field 'model_type'"),
    (["--finlora-config", FINLORA], "choose one with --run"),
    (["--finlora-config", FINLORA, "--run", "nope"], "no run named 'nope'"),
    (["--finlora-config", FINLORA, "--run", "broken_unknown_base"], "'base_model'"),
    (["--finlora-config", FINLORA, "--run", "broken_quant_bits"], "quant_bits must be 4, 8 or 16"),
    (["--run", "x", "--model", "gpt2"], "--run needs --finlora-config"),
    (["--model", "gpt2", "--bogus"], "unrecognized arguments"),
    (["explain", "--topic", "nope"], "--topic"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2(argv, needle, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("param-calc: error: "), err
    assert needle in err
    assert "Traceback" not in err


def _subprocess(args):
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=60)


def test_python_m_and_no_numpy_or_matplotlib_on_the_cli_path():
    code = ("import sys; from param_calc.cli import main; rc = main(['--model', 'llama-3.1-70b', '--rank', '4', "
            "'--targets', 'q_proj,k_proj,v_proj', '--ranks', '1,2']); "
            "assert rc == 0; assert 'numpy' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'")
    p = _subprocess(["-c", code])
    assert p.returncode == 0, p.stderr
    p = _subprocess(["-m", "param_calc", "--model", "nope"])
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = _subprocess(["-m", "param_calc", "--help"])
    assert p.returncode == 0 and "--finlora-config" in p.stdout
