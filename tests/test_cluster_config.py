"""cluster.yaml is a valid Ray cluster-launcher config, and keeps the properties that matter: GPU node
types that declare what their instance types have, autoscaling bounds, token auth on every node, MLflow's
basic-auth app on the head's private address, the project (with its search spaces) mounted and
installed, and no secret in any committed cluster file. No cloud call: Ray's own config preparation and
its JSON-schema validation only."""
import configparser
import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
START_MLFLOW = ROOT / "cluster" / "start_mlflow.sh"
AUTH_INI = ROOT / "cluster" / "basic_auth.ini"
ENV_EXAMPLE = ROOT / "cluster" / "mlflow-head.env.example"
COMMITTED = [CLUSTER_YAML, START_MLFLOW, AUTH_INI, ENV_EXAMPLE, ROOT / "cluster" / "mount_shared.sh",
             ROOT / "docs" / "cluster.md"]

# What each instance type has (AWS): vCPUs and NVIDIA GPUs.
INSTANCE_TYPES = {
    "m5.2xlarge": {"CPU": 8, "GPU": 0},
    "g5.4xlarge": {"CPU": 16, "GPU": 1},
    "p4d.24xlarge": {"CPU": 96, "GPU": 8},
}


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def validated(config: dict) -> dict:
    """What `ray up` does before any cloud call: fill in the provider's defaults, then validate against
    ray/autoscaler/ray-schema.json and Ray's own consistency checks."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def commands(config: dict, key: str) -> list[str]:
    return [str(c) for c in config.get(key, [])]


def test_validates_against_rays_schema(raw):
    prepared = validated(raw)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("breakage", [
    lambda c: c.update(max_wrokers=4),  # an unknown top-level key
    lambda c: c.update(max_workers="6"),  # a string where Ray wants an integer
    lambda c: c["available_node_types"]["gpu_8x_a100"].update(max_workers="two"),
    lambda c: c["available_node_types"]["gpu_8x_a100"]["resources"].update(GPU=-1),
    lambda c: c["available_node_types"]["gpu_1x_a10g"].pop("node_config"),
])
def test_a_broken_copy_is_rejected(raw, breakage):
    broken = copy.deepcopy(raw)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        validated(broken)


def test_global_max_workers_below_the_min_workers_is_rejected(raw):
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_1x_a10g"]["min_workers"] = 3
    broken["max_workers"] = 2
    with pytest.raises(ValueError, match="max_workers"):
        validated(broken)


def test_node_types_declare_what_their_instances_have(raw):
    types = raw["available_node_types"]
    gpu_types = []
    for name, node_type in types.items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in INSTANCE_TYPES, f"{name}: add {instance} to INSTANCE_TYPES"
        has = INSTANCE_TYPES[instance]
        declared = node_type["resources"]
        assert declared.get("GPU", 0) == has["GPU"], f"{name} ({instance}) has {has['GPU']} GPUs"
        assert declared.get("CPU", has["CPU"]) <= has["CPU"], f"{name} ({instance}) has {has['CPU']} vCPUs"
        if has["GPU"]:
            gpu_types.append(name)
    head = types[raw["head_node_type"]]
    assert INSTANCE_TYPES[head["node_config"]["InstanceType"]]["GPU"] == 0  # a CPU head
    assert {INSTANCE_TYPES[types[n]["node_config"]["InstanceType"]]["GPU"] for n in gpu_types} >= {1, 8}
    # the search spaces' gpu profile (8 workers x 8 CPUs x 1 GPU) fits on one 8-GPU node
    assert any(types[n]["resources"]["GPU"] >= 8 and types[n]["resources"]["CPU"] >= 64 for n in gpu_types)


def test_autoscaling_bounds(raw):
    workers = [t for n, t in raw["available_node_types"].items() if n != raw["head_node_type"]]
    for node_type in workers:
        assert isinstance(node_type["min_workers"], int) and isinstance(node_type["max_workers"], int)
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
    assert sum(t["min_workers"] for t in workers) <= raw["max_workers"]
    assert raw["max_workers"] <= sum(t["max_workers"] for t in workers)
    assert all(t["min_workers"] == 0 for t in workers)  # GPUs only while a sweep needs them
    assert 0 < raw["idle_timeout_minutes"] <= 60


def test_ray_token_auth_on_every_node(raw):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in commands(raw, key) if re.search(r"\bray start\b", c)]
        assert starts, key
        for cmd in starts:
            before = cmd[: cmd.index("ray start")]
            assert re.search(r"(^|[\s;])(export\s+)?RAY_AUTH_MODE=token\b", before), f"{key}: {cmd}"
        assert not any("RAY_AUTH_MODE=disabled" in c for c in commands(raw, key))
    # the token travels by reference: the user's token file, mounted on every node
    assert raw["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c for c in commands(raw, "setup_commands"))


def test_dashboard_stays_private(raw):
    head_start = " ".join(commands(raw, "head_start_ray_commands"))
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()


def test_head_starts_mlflow_basic_auth_on_the_private_address(raw):
    head_start = commands(raw, "head_start_ray_commands")
    assert "bash ~/ito-sweeps/cluster/start_mlflow.sh" in head_start
    assert head_start.index("bash ~/ito-sweeps/cluster/start_mlflow.sh") > next(
        i for i, c in enumerate(head_start) if "ray start --head" in c)  # needs Ray's venv, after Ray
    script = START_MLFLOW.read_text()
    server = re.search(r"mlflow server((?:[^\n]*\\\n)*[^\n]*)", script)
    assert server, "start_mlflow.sh runs no `mlflow server`"
    args = shlex.split(server.group(1).replace("\\\n", " "))
    assert args[args.index("--app-name") + 1] == "basic-auth"
    assert args[args.index("--host") + 1] == "$HOST"
    assert "--artifacts-destination" in args and "--backend-store-uri" in args
    # $HOST is the address Ray advertises to the workers, and never a wildcard or loopback one
    assert re.search(r"^HOST=\$\(python -c '.*get_node_ip_address\(\).*'\)$", script, flags=re.M)
    assert re.search(r'case "\$HOST" in\n\s*"" \| 0\.0\.0\.0 \| 127\.\*', script)
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "0.0.0.0" in line and not line.lstrip().startswith('"" |')]
    # secrets and settings come from the env file; the auth config is the committed one
    for var in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_ARTIFACTS_DESTINATION"):
        assert re.search(rf'\$\{{{var}:\?', script), var
    assert 'MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-$HERE/basic_auth.ini}"' in script
    assert any('"mlflow[auth]' in c for c in commands(raw, "head_setup_commands"))


def test_mlflow_env_var_names_are_mlflows_own():
    from mlflow import environment_variables as ev

    names = {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_CONFIG_PATH",
             "MLFLOW_BACKEND_STORE_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    for name in names - {"MLFLOW_BACKEND_STORE_URI"}:
        assert getattr(ev, name).name == name
    text = START_MLFLOW.read_text() + ENV_EXAMPLE.read_text()
    assert all(n in text for n in names - {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"})


def test_basic_auth_ini_is_complete_and_holds_no_secret(monkeypatch):
    parser = configparser.ConfigParser()
    parser.read(AUTH_INI)
    assert "admin_password" not in parser["mlflow"]
    assert parser["mlflow"]["database_uri"].startswith("sqlite:////home/ubuntu/.ito-sweeps/")
    # MLflow's own reader, loaded from its file: importing the package would need the auth extra here
    import importlib.util

    import mlflow

    spec = importlib.util.spec_from_file_location(
        "mlflow_auth_config", Path(mlflow.__file__).parent / "server" / "auth" / "config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    read_auth_config = module.read_auth_config
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(AUTH_INI))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    auth = read_auth_config()  # MLflow's own reader: every required key is there
    assert auth.admin_password is None and auth.admin_username == "admin"
    assert auth.default_permission in {"READ", "NO_PERMISSIONS"}


def test_project_and_search_spaces_are_mounted_and_installed(raw):
    mounts = {remote: (ROOT / Path(local).expanduser()).resolve()
              for remote, local in raw["file_mounts"].items() if not local.startswith("~")}
    assert mounts.get("~/ito-sweeps") == ROOT  # relative to the repository root, where `ray up` runs
    assert (ROOT / "search_spaces").is_dir() and any((ROOT / "search_spaces").glob("*.yaml"))
    excluded = set(raw.get("rsync_exclude", []))
    assert "search_spaces" not in excluded and not any(p.startswith("search_spaces") for p in excluded)
    assert {".venv", "**/.git"} <= excluded
    setup = commands(raw, "setup_commands")
    assert any(re.search(r"\bpip install\b.*\s-e ~/ito-sweeps(\s|$)", c) for c in setup)
    assert any(re.search(r'"ray\[default,tune,train\]==\d+\.\d+\.\d+"', c) for c in setup)
    assert any("~/venv/bin/activate" in c for c in setup)
    helpers = re.findall(r"~/ito-sweeps/(cluster/[\w.-]+)", CLUSTER_YAML.read_text())
    assert helpers and all((ROOT / h).is_file() for h in helpers)


def test_ray_pin_matches_the_local_client(raw):
    import ray

    pins = re.findall(r"ray\[[\w,]+\]==([\d.]+)", " ".join(commands(raw, "setup_commands")))
    assert pins == [ray.__version__], "cluster Ray must equal the local `ray up` / `ray job submit` client"


_KEY = r"[\w.-]*(?:password|passwd|secret|token|api_key)(?![\w.-]*(?:path|file))[\w.-]*"
_VALUE = r"""['"]?(?!\$)(?!\{)(?!<)(?!~)(?!/)(?!\.\.\.)[^\s'"#`]{4,}"""
SUSPICIOUS = [
    (re.compile(r"AKIA[0-9A-Z]{16}"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    # a YAML key at the start of a line, or a shell / INI / env-file assignment, with a literal value
    (re.compile(rf"""(?i)^\s*(?:-\s*)?['"]?{_KEY}['"]?\s*:\s*{_VALUE}"""), "a literal credential (YAML)"),
    (re.compile(rf"(?i)(?<![\w.-]){_KEY}\s*=\s*{_VALUE}"), "a literal credential (assignment)"),
    (re.compile(r"postgres(ql)?://[^:/@\s]+:(?!PASSWORD@)[^@\s]+@"), "a database password"),
]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secret_in_committed_cluster_files(path):
    assert path.is_file(), path
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        for pattern, what in SUSPICIOUS:
            assert not pattern.search(line), f"{path.name}:{lineno}: looks like {what}: {line.strip()}"


def test_the_secret_scan_catches_literals():
    leaks = ["MLFLOW_AUTH_ADMIN_PASSWORD=hunter2hunter2", "secret_key: s3cr3t-value", "password = abcdef",
             "aws_access_key_id = AKIAABCDEFGHIJKLMNOP", "aws_secret_access_key: abcd1234efgh", "postgresql://mlflow:pa55word@db:5432/mlflow",
             "RAY_AUTH_TOKEN=0123456789abcdef"]
    fine = ["MLFLOW_AUTH_ADMIN_PASSWORD=", 'export MLFLOW_TRACKING_PASSWORD="$PW"',
            ': "${MLFLOW_FLASK_SERVER_SECRET_KEY:?is empty}"', "~/.ray/auth_token: ~/.ray/auth_token",
            "postgresql://USER:PASSWORD@HOST:5432/mlflow", "RAY_AUTH_TOKEN=$(ray get-auth-token)",
            "#   - Ray auth token: your local file", "set `RAY_AUTH_TOKEN_PATH=FILE`",
            "MLFLOW_TRACKING_PASSWORD=` the admin password", '{"MLFLOW_TRACKING_PASSWORD": "..."}']
    hits = lambda s: [w for p, w in SUSPICIOUS if p.search(s)]  # noqa: E731
    assert all(hits(s) for s in leaks), [s for s in leaks if not hits(s)]
    assert not any(hits(s) for s in fine), {s: hits(s) for s in fine if hits(s)}


def test_env_template_leaves_every_value_empty():
    values = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                  if line and not line.startswith("#"))
    assert set(values) == {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
                           "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_BACKEND_STORE_URI"}
    assert all(v == "" for v in values.values())
