import json
import subprocess
import sys

from e2_hf import E2CLIPConfig, E2CLIPModel
from e2_hf.parameters import count_for_config, count_new_parameters

from .conftest import E2CLIPModelTester


def test_new_parameter_count_by_hand():
    tester = E2CLIPModelTester()
    report = count_new_parameters(E2CLIPModel(tester.get_config()))
    width, projection, tokens, fusion_blocks, entities = 32, 16, 8, 2, 4
    assert report.new_by_group == {
        "selection_tokens": tokens * width,
        "fusion_blocks": fusion_blocks * 3 * width * width,
        "region_head": entities * (2 * width + width * projection),
    }
    plain = E2CLIPModelTester(entities=[], tokens_per_entity=[])
    assert report.clip_parameters == sum(p.numel() for p in E2CLIPModel(plain.get_config()).parameters())


def test_vit_b32_share_and_the_command(tmp_path):
    report = count_for_config(E2CLIPConfig())
    assert report.clip_parameters == 151_277_313  # openai/clip-vit-base-patch32
    assert 0.03 < report.share_of_clip < 0.04
    output = tmp_path / "params.json"
    completed = subprocess.run(
        [sys.executable, "-m", "e2_hf.cli", "count-params", "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"{report.e2_new_parameters:,}" in completed.stdout and "% of CLIP" in completed.stdout
    assert json.loads(output.read_text())["e2_new_parameters"] == report.e2_new_parameters


LOADED_BY = """
import sys
from e2_hf.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("torch", "transformers", "h5py", "e2_hf.training.trainer", "e2_hf.search.index",
         "e2_hf.conversion.push_to_hub", "e2_hf.visualization", "e2_hf.tagging")
print(" ".join(name for name in heavy if name in sys.modules))
"""


def test_the_cli_imports_only_the_command_it_runs_and_has_a_version():
    import e2_hf
    from e2_hf.cli import COMMANDS, Command

    def loaded(*arguments):
        completed = subprocess.run([sys.executable, "-c", LOADED_BY, *arguments], capture_output=True, text=True,
                                   timeout=300)  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-2000:]
        return completed.stdout.split("\n")

    version_output, modules = loaded("--version")[:2]
    assert version_output == f"e2-hf {e2_hf.__version__}" and modules == ""
    assert loaded("--help")[-2] == ""
    for name, command in COMMANDS.items():
        assert loaded(name, "--help")[-2] == "", name  # no torch, transformers or subsystem for any --help
        assert callable(Command.load(command.run)), name  # and each runner is where the table says


def test_the_light_dtype_names_are_the_hub_codes():
    from e2_hf.choices import DTYPE_NAMES
    from e2_hf.modeling.embedding_e2clip import DTYPE_NAMES as HUB_DTYPE_NAMES
    from e2_hf.modeling.embedding_e2clip import DTYPES

    assert DTYPE_NAMES == HUB_DTYPE_NAMES and set(DTYPE_NAMES) <= set(DTYPES)
