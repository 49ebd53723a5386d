"""The README's two commands stay true: CI runs exactly the README's test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_two_commands_and_ci_runs_the_second():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert text.index("```bash") < text.index("## ")  # the commands come first
    assert "pip install" in main_job and "ito-sweeps sweep search_spaces/ablation_components.yaml &&" in main_job
    # the sweep's name is its file's stem
    assert main_job.endswith("ito-sweeps report --experiment ablation_components")
    assert (ROOT / "search_spaces" / "ablation_components.yaml").is_file()
    assert tests.endswith("pytest -q") and "'.[test]'" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()
