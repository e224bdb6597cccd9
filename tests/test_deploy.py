"""Deployment artefacts, checked offline: Dockerfiles (hadolint and what the images promise), the
compose file (docker-compose config, every profile), the Kubernetes kustomizations (kubectl
kustomize, then kubernetes-validate --strict) and what the rendered overlays must hold: probes,
resources and security contexts everywhere, the scaling and storage of each stage, settings that
the services really read."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from codeindex_common.config import from_namespace
from codeindex_common.healthcheck import HealthcheckConfig
from embed_svc.config import EmbedConfig
from orchestrator.config import OrchestratorConfig
from parser_svc.config import ParserConfig
from store_svc.config import StoreConfig

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker/compose.yaml"
OVERLAYS = ("cpu", "gpu", "triton")
CONFIGS = {"PARSER": ParserConfig, "EMBED": EmbedConfig, "STORE": StoreConfig, "ORCHESTRATOR": OrchestratorConfig,
           "HEALTHCHECK": HealthcheckConfig}
# each codeindex stage: its gRPC port and its metrics port
PORTS = {"parser": (50051, 9101), "embed": (50052, 9102), "store": (50053, 9103), "orchestrator": (50050, 9100)}
NAMESPACE = "codeindex"


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}:/usr/local/bin:/usr/bin:/bin")
    assert path, f"{name} is missing: `make test` installs it (see the Makefile's test-deps)"
    return path


def _kind(kustomization: Path) -> str:
    return yaml.safe_load((kustomization / "kustomization.yaml").read_text()).get("kind", "Kustomization")


# kustomize Components cannot be built on their own: they are rendered on top of the base
ALL_KUSTOMIZATIONS = sorted(p.parent for p in (ROOT / "k8s").rglob("kustomization.yaml"))
KUSTOMIZATIONS = [p for p in ALL_KUSTOMIZATIONS if _kind(p) != "Component"]
COMPONENTS = [p for p in ALL_KUSTOMIZATIONS if _kind(p) == "Component"]


# ---------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("Dockerfile*")), ids=lambda p: p.name)
def test_hadolint(dockerfile):
    subprocess.run([tool("hadolint"), str(dockerfile)], check=True)


def _stages(dockerfile: Path) -> dict[str, list[str]]:
    """Instructions of each build stage (continuation lines joined), by stage name."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            words = line.split()
            current = stages.setdefault(words[3] if len(words) > 3 else f"stage{len(stages)}", [])
        current.append(line)
    return stages


def _user(instructions: list[str], inherited: str = "") -> str:
    users = [i.split()[1] for i in instructions if i.upper().startswith("USER ")]
    return users[-1] if users else inherited


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("Dockerfile*")), ids=lambda p: p.name)
def test_images_run_as_non_root_with_a_health_check(dockerfile):
    stages = _stages(dockerfile)
    base_user = ""
    for name, instructions in stages.items():
        base_user = _user(instructions, base_user)
        if name in ("base", "requirements"):
            continue  # the services' common stages: checked through each target
        user = _user(instructions, base_user)
        assert user and user not in ("root", "0"), f"{dockerfile.name}:{name} runs as {user or 'root'}"
        checks = [i for i in instructions if i.upper().startswith("HEALTHCHECK")]
        assert checks, f"{dockerfile.name}:{name} has no HEALTHCHECK"
        if "tritonserver" not in instructions[0] and "prometheus" not in dockerfile.name:
            # the service's own grpc.health.v1, where its listen setting says it listens
            service = re.search(r"ENTRYPOINT \[\"(?:python\", \"-m\", \")?(\w+?)(?:_svc)?\"", " ".join(instructions))
            assert service, f"{dockerfile.name}:{name} has no entry point"
            service = service.group(1)
            assert re.search(rf"CODEINDEX_{service.upper()}_LISTEN=0\.0\.0\.0:\d+", " ".join(instructions)), \
                f"{dockerfile.name}:{name} sets no listen address"
            assert f'"codeindex_common.healthcheck", "--of", "{service}"' in checks[0]


def test_the_embedder_image_exports_the_onnx_model_at_build_time():
    embed = " ".join(_stages(ROOT / "docker/Dockerfile")["embed"])
    assert "python -m embed_svc.backends.onnx export" in embed
    assert "ENV CODEINDEX_ONNX_CACHE=" in embed  # outside $HOME, so a volume over ~/.cache cannot hide it


# ---------------------------------------------------------------- compose


@pytest.mark.parametrize("profiles", [(), ("gpu",), ("triton",), ("gpu", "triton")],
                         ids=lambda p: "+".join(p) or "none")
def test_compose_file_is_valid(profiles):
    args = [a for p in profiles for a in ("--profile", p)]
    subprocess.run([tool("docker-compose"), "-f", str(COMPOSE), *args, "config", "-q"], check=True)


def test_the_host_network_compose_file_is_valid_and_binds_loopback_only():
    """docker/compose.host.yaml, which make test-docker runs for real: every service on the host's network,
    every listen and metrics address on loopback, the two replicas of parser and embed behind one name."""
    env = {k: v for k, v in os.environ.items() if k != "REPO" and not k.endswith("_PORT")}
    out = subprocess.run([tool("docker-compose"), "-f", str(ROOT / "docker/compose.host.yaml"), "config"], check=True,
                         capture_output=True, text=True, env=env).stdout
    services = yaml.safe_load(out)["services"]
    assert set(services) == {"parser-1", "parser-2", "embed-1", "embed-2", "store", "orchestrator", "prometheus"}
    for name, svc in services.items():
        assert svc["network_mode"] == "host" and svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        for key, value in svc.get("environment", {}).items():
            if key.endswith(("_LISTEN", "_METRICS_HOST")):
                assert str(value).startswith("127."), f"{name}: {key}={value}"
    orchestrator = services["orchestrator"]
    assert orchestrator["environment"]["CODEINDEX_ORCHESTRATOR_PARSER_ADDR"] == "dns:///parser:50051"
    assert sorted(orchestrator["extra_hosts"]) == ["embed:127.0.2.1", "embed:127.0.2.2", "parser:127.0.1.1",
                                                   "parser:127.0.1.2"]
    assert any(v.endswith(":/data") or ":/data:" in v for v in _volumes(orchestrator))  # its stat cache


@functools.cache
def _compose_config(*profiles: str) -> dict:
    args = [a for p in profiles for a in ("--profile", p)]
    env = {k: v for k, v in os.environ.items() if k not in ("EMBED_ADDR", "REPO")}
    out = subprocess.run([tool("docker-compose"), "-f", str(COMPOSE), *args, "config"], check=True,
                         capture_output=True, text=True, env=env).stdout
    return yaml.safe_load(out)


def test_compose_services():
    services = subprocess.run([tool("docker-compose"), "-f", str(COMPOSE), "--profile", "gpu", "--profile", "triton",
                               "config", "--services"], check=True, capture_output=True, text=True).stdout.split()
    assert set(services) == {"parser", "embed", "embed-gpu", "triton", "embed-triton", "store", "orchestrator",
                             "prometheus", "grafana"}
    # what `up` starts without a profile (docker-compose 1.29's --services lists every service)
    default = {name for name, svc in _compose_config("gpu", "triton")["services"].items() if not svc.get("profiles")}
    assert default == {"parser", "embed", "store", "orchestrator", "prometheus", "grafana"}


def test_compose_stack():
    services = _compose_config("gpu", "triton")["services"]
    for name in ("parser", "embed", "embed-gpu", "embed-triton", "store", "orchestrator"):
        svc = services[name]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
    orchestrator = services["orchestrator"]
    assert orchestrator["command"][0] == "serve"
    assert {"parser", "embed", "store"} <= set(orchestrator["depends_on"])
    env = orchestrator["environment"]
    assert env["CODEINDEX_ORCHESTRATOR_PARSER_ADDR"] == "parser:50051"
    assert env["CODEINDEX_ORCHESTRATOR_EMBED_ADDR"] == "embed:50052"  # EMBED_ADDR picks embed-gpu or embed-triton
    assert env["CODEINDEX_ORCHESTRATOR_STORE_ADDR"] == "store:50053"
    _check_env(env)
    triton = services["triton"]
    assert any(v.endswith(":/models:ro") and "deploy/triton/model_repository" in v for v in _volumes(triton))
    assert "--model-repository=/models" in triton["command"]
    embed_triton = services["embed-triton"]
    assert embed_triton["environment"]["CODEINDEX_EMBED_BACKEND"] == "triton"
    assert embed_triton["environment"]["CODEINDEX_EMBED_TRITON_URL"] == "triton:8001"
    _check_env(embed_triton["environment"])
    for gpu in ("embed-gpu", "triton"):
        devices = services[gpu]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    grafana = _volumes(services["grafana"])
    assert any("deploy/grafana/provisioning" in v and v.endswith(":/etc/grafana/provisioning:ro") for v in grafana)
    assert any("deploy/grafana/dashboards" in v for v in grafana)
    dashboards = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/codeindex.yml").read_text())
    assert dashboards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert {f"{name}:{metrics}" for name, (_, metrics) in PORTS.items()} <= targets
    assert {"embed-gpu:9102", "embed-triton:9102"} <= targets


def _volumes(service: dict) -> list[str]:
    """Compose volumes as SOURCE:TARGET[:ro] strings, whichever syntax docker-compose printed."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            out.append(v)
        else:
            out.append(f"{v.get('source', '')}:{v['target']}" + (":ro" if v.get("read_only") else ""))
    return out


# ---------------------------------------------------------------- Kubernetes: render and validate


def _validate(rendered: str, tmp_path: Path) -> None:
    assert "kind:" in rendered
    (tmp_path / "rendered.yaml").write_text(rendered)
    subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", str(tmp_path / "rendered.yaml")], check=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomizations_render_and_validate(kustomization, tmp_path):
    _validate(kustomize(kustomization), tmp_path)


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_components_render_on_the_base_and_validate(component, tmp_path):
    _validate(kustomize(ROOT / "k8s/base", component), tmp_path)


def test_every_overlay_is_tested():
    assert {p.name for p in (ROOT / "k8s/overlays").iterdir() if p.is_dir()} == set(OVERLAYS)
    assert {ROOT / "k8s/overlays" / o for o in OVERLAYS} <= set(KUSTOMIZATIONS)


@functools.cache
def kustomize(path: Path, *components: Path) -> str:
    """`kubectl kustomize` of a kustomization, or of one with components added (through a throwaway
    kustomization: kustomize takes relative paths only)."""
    if not components:
        return subprocess.run([tool("kubectl"), "kustomize", str(path)], check=True, capture_output=True,
                              text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [os.path.relpath(path, tmp)],
            "components": [os.path.relpath(c, tmp) for c in components]}))
        return subprocess.run([tool("kubectl"), "kustomize", tmp], check=True, capture_output=True,
                              text=True).stdout


def objects(path: Path, *components: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(kustomize(path, *components)) if d]


def overlay(name: str) -> list[dict]:
    return objects(ROOT / "k8s/overlays" / name)


def one(objs: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_specs(objs: list[dict]) -> dict[str, dict]:
    """Every pod template, by KIND/NAME."""
    pods = {}
    for o in objs:
        key = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in ("Deployment", "Job"):
            pods[key] = o["spec"]["template"]
        elif o["kind"] == "CronJob":
            pods[key] = o["spec"]["jobTemplate"]["spec"]["template"]
    return pods


def container(objs: list[dict], deployment: str) -> dict:
    return one(objs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def _cpus(quantity: str) -> int:
    """What the downward API gives for a CPU limit with divisor 1: whole CPUs, rounded up."""
    quantity = str(quantity)
    return math.ceil(int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity))


def _check_env(env: dict[str, str | None], limits: dict | None = None) -> None:
    """Every CODEINDEX_<SERVICE>_* variable names a field of that service's config dataclass, and its
    value converts to the field's type (the service would refuse to start otherwise). A value from
    the downward API (None here) is the container's CPU limit."""
    by_service: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        m = re.match(r"CODEINDEX_(PARSER|EMBED|STORE|ORCHESTRATOR|HEALTHCHECK)_", name)
        if m:
            by_service.setdefault(m.group(1), {})[name] = str(_cpus((limits or {})["cpu"])) if value is None else value
    for service, variables in by_service.items():
        cls = CONFIGS[service]
        known = {f"CODEINDEX_{service}_{f.upper()}" for f in cls.__dataclass_fields__}
        assert set(variables) <= known, f"not settings of {cls.__name__}: {sorted(set(variables) - known)}"
        from_namespace(cls, service.lower(), {}, variables)


# ---------------------------------------------------------------- Kubernetes: what the overlays hold


@pytest.mark.parametrize("name", OVERLAYS)
def test_everything_is_namespaced_and_labelled(name):
    objs = overlay(name)
    for o in objs:
        labels = o["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "codeindex", f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Namespace":
            assert o["metadata"]["name"] == NAMESPACE
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']}/{o['metadata']['name']}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_pod_is_locked_down_and_sized(name):
    """restricted Pod Security: non-root, RuntimeDefault seccomp, no privilege escalation, no
    capabilities; read-only root filesystems; requests and limits on every container."""
    pods = pod_specs(overlay(name))
    assert pods
    for key, template in pods.items():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, key
        assert isinstance(spec["securityContext"]["runAsUser"], int) and spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, key
        assert spec["automountServiceAccountToken"] is False, key
        mounted_tmp = True
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{key} {c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc.get("privileged"), where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), f"{where}: {bound}"
            mounted_tmp &= any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", []))
        assert mounted_tmp, f"{key}: a read-only root needs a writable /tmp"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{key} {c['name']}: no volume {m['name']}"
        for v in volumes.values():
            assert not {"hostPath"} & set(v), f"{key}: {v['name']}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_deployments_have_grpc_health_probes(name):
    objs = overlay(name)
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    names = {d["metadata"]["name"] for d in deployments}
    assert {"parser", "embed", "store", "orchestrator"} <= names
    for d in deployments:
        for c in d["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{d['metadata']['name']}: no {probe}"
            component = d["metadata"]["name"]
            if component in PORTS:  # the codeindex services: grpc.health.v1 on the service port
                grpc_port, _ = PORTS[component]
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert c[probe]["grpc"]["port"] == grpc_port, f"{component} {probe}"
            else:  # Triton: its HTTP health endpoints
                assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
                assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


@pytest.mark.parametrize("name", OVERLAYS)
def test_services_listen_on_all_interfaces_with_real_settings(name):
    """The listen and metrics addresses match the ports the pod declares, the Service exposes and
    Prometheus is told to scrape; every CODEINDEX_* variable is a real setting with a valid value."""
    objs = overlay(name)
    for component, (grpc_port, metrics_port) in PORTS.items():
        deployment = one(objs, "Deployment", component)
        c = container(objs, component)
        env = env_of(c)
        prefix = f"CODEINDEX_{component.upper()}_"
        assert env[prefix + "LISTEN"] == f"0.0.0.0:{grpc_port}"
        assert env[prefix + "METRICS_HOST"] == "0.0.0.0"
        assert env[prefix + "METRICS_PORT"] == str(metrics_port)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": grpc_port, "metrics": metrics_port}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(metrics_port)
        service = one(objs, "Service", component)
        assert {p["port"] for p in service["spec"]["ports"]} == {grpc_port, metrics_port}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        _check_env(env, c["resources"]["limits"])
    for template in pod_specs(objs).values():
        for c in template["spec"]["containers"]:
            _check_env(env_of(c), c["resources"]["limits"])
    for o in objs:
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("codeindex-orchestrator"):
            _check_env(o["data"])


@pytest.mark.parametrize("name", OVERLAYS)
def test_parser_and_embed_scale_out_behind_headless_services(name):
    objs = overlay(name)
    hpas = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    assert all(h["apiVersion"] == "autoscaling/v2" for h in hpas)
    targets = {h["spec"]["scaleTargetRef"]["name"]: h for h in hpas}
    assert set(targets) == {"parser", "embed"}
    orchestrator = next(o["data"] for o in objs if o["kind"] == "ConfigMap"
                        and o["metadata"]["name"].startswith("codeindex-orchestrator"))
    streams = {"parser": "CODEINDEX_ORCHESTRATOR_PARSE_STREAMS", "embed": "CODEINDEX_ORCHESTRATOR_EMBED_STREAMS"}
    for stage, hpa in targets.items():
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert "replicas" not in one(objs, "Deployment", stage)["spec"], f"{stage}: the HPA owns the replica count"
        assert one(objs, "Service", stage)["spec"]["clusterIP"] == "None", f"{stage}: not headless"
        # a run uses at most as many replicas as it opens streams
        assert int(orchestrator[streams[stage]]) >= hpa["spec"]["maxReplicas"], stage
        assert orchestrator[f"CODEINDEX_ORCHESTRATOR_{stage.upper()}_ADDR"] == f"dns:///{stage}:{PORTS[stage][0]}"
    # CPU: the parser's workers and the embedder's threads follow the CPU limit, not the node's cores
    for stage, var in (("parser", "CODEINDEX_PARSER_WORKERS"), ("embed", "CODEINDEX_EMBED_THREADS")):
        ref = next(e for e in container(objs, stage)["env"] if e["name"] == var)["valueFrom"]["resourceFieldRef"]
        assert ref["resource"] == "limits.cpu" and ref["containerName"] == stage
    for stage in ("store", "orchestrator"):
        assert one(objs, "Service", stage)["spec"].get("clusterIP") != "None"
    assert orchestrator["CODEINDEX_ORCHESTRATOR_STORE_ADDR"] == "store:50053"


@pytest.mark.parametrize("name", OVERLAYS)
def test_disruption_budgets_cover_the_replicated_stages(name):
    objs = overlay(name)
    pdbs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PodDisruptionBudget"}
    assert {"parser", "embed", "orchestrator"} <= set(pdbs)
    for pdb_name, pdb in pdbs.items():
        labels = one(objs, "Deployment", pdb_name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert "maxUnavailable" in pdb["spec"] or pdb["spec"]["minAvailable"] < one(
            objs, "Deployment", pdb_name)["spec"].get("replicas", 1), f"{pdb_name} would block every eviction"


@pytest.mark.parametrize("name", OVERLAYS)
def test_store_is_one_writer_on_a_volume(name):
    objs = overlay(name)
    store = one(objs, "Deployment", "store")
    assert store["spec"]["replicas"] == 1
    assert store["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in store["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    pvc = one(objs, "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    c = container(objs, "store")
    mount = next(m for m in c["volumeMounts"] if m["name"] == "data")
    assert env_of(c)["CODEINDEX_STORE_URI"].startswith(mount["mountPath"] + "/")
    assert store["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001


def test_the_s3_component_moves_the_store_to_a_bucket_with_credentials_from_a_secret():
    objs = objects(ROOT / "k8s/base", ROOT / "k8s/components/s3-store")
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    store = one(objs, "Deployment", "store")
    assert store["spec"]["replicas"] == 1
    spec = store["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = env_of(c)
    assert env["CODEINDEX_STORE_URI"].startswith("s3://")
    _check_env(env)
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), "credentials in plain env"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "persistentVolumeClaim" not in volumes["data"]
    options = Path(env["CODEINDEX_STORE_STORAGE_OPTIONS_FILE"])
    mount = next(m for m in c["volumeMounts"] if options.parent == Path(m["mountPath"]))
    assert mount.get("readOnly") is True
    assert volumes[mount["name"]]["secret"]["secretName"] == "codeindex-store-s3"


def _secret_mount(spec: dict, c: dict, secret: str) -> str:
    """Where container ``c`` mounts the Secret ``secret`` (read-only, asserted)."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = [m for m in c.get("volumeMounts", []) if volumes[m["name"]].get("secret", {}).get("secretName") == secret]
    assert len(mounts) == 1, f"{c['name']}: {secret} mounted {len(mounts)} times"
    assert mounts[0].get("readOnly") is True, c["name"]
    return mounts[0]["mountPath"]


def test_the_internal_tls_component_puts_the_stages_on_mutual_tls():
    """Every stage wants TLS and a client certificate, probed over TLS (exec probes: the kubelet's grpc
    probes speak plain text only); the API and the index pods present their certificate."""
    objs = objects(ROOT / "k8s/base", ROOT / "k8s/components/internal-tls")
    secret = "codeindex-internal-tls"
    for stage in ("parser", "embed", "store"):
        grpc_port, _ = PORTS[stage]
        spec = one(objs, "Deployment", stage)["spec"]["template"]["spec"]
        c = container(objs, stage)
        path = _secret_mount(spec, c, secret)
        env = env_of(c)
        _check_env(env, c["resources"]["limits"])
        prefix = f"CODEINDEX_{stage.upper()}_"
        assert env[prefix + "TLS_CERT"] == f"{path}/tls.crt" and env[prefix + "TLS_KEY"] == f"{path}/tls.key"
        assert env[prefix + "TLS_CLIENT_CA"] == f"{path}/ca.crt"
        assert env["CODEINDEX_HEALTHCHECK_TLS_CA"] == f"{path}/ca.crt"
        assert {env["CODEINDEX_HEALTHCHECK_TLS_CERT"], env["CODEINDEX_HEALTHCHECK_TLS_KEY"]} == {
            f"{path}/tls.crt", f"{path}/tls.key"}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" not in c[probe], f"{stage} {probe}"
            command = c[probe]["exec"]["command"]
            assert command[:4] == ["python", "-m", "codeindex_common.healthcheck", f"127.0.0.1:{grpc_port}"]
            assert command[command.index("--tls-server-name") + 1] == stage  # the name the orchestrator dials
            assert c[probe]["timeoutSeconds"] >= 5, f"{stage} {probe}"
    generated = configmap_name(objs)
    configmap = one(objs, "ConfigMap", generated)["data"]
    _check_env(configmap)
    assert configmap["CODEINDEX_ORCHESTRATOR_PARSER_ADDR"] == "dns:///parser:50051"  # merged, not replaced
    clients = {"Deployment/orchestrator": ["orchestrator"], "Job/index": ["wait-for-stages", "index"],
               "CronJob/index": ["wait-for-stages", "index"]}
    pods = pod_specs(objs)
    for key, names in clients.items():
        spec = pods[key]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            if c["name"] not in names:
                continue
            assert any(e["configMapRef"]["name"] == generated for e in c["envFrom"]), f"{key} {c['name']}"
            path = _secret_mount(spec, c, secret)
            for var, file in (("ORCHESTRATOR_INTERNAL_TLS_CA", "ca.crt"), ("ORCHESTRATOR_INTERNAL_TLS_CERT", "tls.crt"),
                              ("ORCHESTRATOR_INTERNAL_TLS_KEY", "tls.key"), ("HEALTHCHECK_TLS_CA", "ca.crt")):
                assert configmap[f"CODEINDEX_{var}"] == f"{path}/{file}", f"{key} {c['name']}"


def configmap_name(objs: list[dict]) -> str:
    """The generated (hashed) name of the ConfigMap codeindex-orchestrator."""
    return next(o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"
                and o["metadata"]["name"].startswith("codeindex-orchestrator"))


def test_gpu_overlay_puts_the_embedder_on_a_gpu():
    objs = overlay("gpu")
    embed = one(objs, "Deployment", "embed")["spec"]["template"]["spec"]
    c = embed["containers"][0]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "cuda" in c["image"]
    assert env_of(c)["CODEINDEX_EMBED_DEVICE"] == "cuda"
    assert embed["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in embed["tolerations"])
    _assert_only_gpu_users(objs, {"Deployment/embed"})


def test_cpu_overlay_needs_no_gpu():
    objs = overlay("cpu")
    _assert_only_gpu_users(objs, set())
    assert env_of(container(objs, "embed"))["CODEINDEX_EMBED_BACKEND"] == "onnx"


def test_triton_overlay_serves_the_model_from_triton():
    objs = overlay("triton")
    c = container(objs, "triton")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--model-repository=/models" in c["args"]
    service = one(objs, "Service", "triton")
    assert 8001 in {p["port"] for p in service["spec"]["ports"]}
    embed = env_of(container(objs, "embed"))
    assert embed["CODEINDEX_EMBED_BACKEND"] == "triton"
    assert embed["CODEINDEX_EMBED_TRITON_URL"] == "triton:8001"
    dshm = next(v for v in one(objs, "Deployment", "triton")["spec"]["template"]["spec"]["volumes"]
                if v["name"] == "dshm")
    assert dshm["emptyDir"]["medium"] == "Memory"
    _assert_only_gpu_users(objs, {"Deployment/triton"})


def _assert_only_gpu_users(objs: list[dict], expected: set[str]) -> None:
    users = {key for key, t in pod_specs(objs).items() for c in t["spec"]["containers"]
             if "nvidia.com/gpu" in c["resources"].get("limits", {})}
    assert users == expected


@pytest.mark.parametrize("name", OVERLAYS)
def test_images_are_the_ones_compose_builds(name):
    built = {svc["image"] for svc in _compose_config("gpu", "triton")["services"].values() if "build" in svc}
    for key, template in pod_specs(overlay(name)).items():
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            assert c["image"] in built or c["image"].startswith("alpine/git:"), f"{key} {c['name']}: {c['image']}"
            assert not c["image"].endswith(":latest")


@pytest.mark.parametrize("name", OVERLAYS)
def test_index_job_and_cronjob_index_a_git_checkout(name):
    objs = overlay(name)
    job, cron = one(objs, "Job", "index"), one(objs, "CronJob", "index")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job_pod, cron_pod = job["spec"]["template"], cron["spec"]["jobTemplate"]["spec"]["template"]
    assert job_pod == cron_pod, "the Job and the CronJob run the same pod"
    spec = job_pod["spec"]
    assert spec["restartPolicy"] == "Never"
    clone = spec["initContainers"][0]
    assert "git" in clone["image"] and "clone" in clone["args"][0]
    index = spec["containers"][0]
    assert index["args"][:2] == ["index", "/src/repo"]
    assert {"name": "src", "mountPath": "/src"} in clone["volumeMounts"]
    assert {"name": "src", "mountPath": "/src", "readOnly": True} in index["volumeMounts"]
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == "src")
    # the addresses come from the ConfigMap that the API uses too, and name real Services and ports
    configmaps = {o["metadata"]["name"]: o["data"] for o in objs if o["kind"] == "ConfigMap"}
    refs = [e["configMapRef"]["name"] for e in index["envFrom"]]
    assert refs and all(r in configmaps for r in refs)
    addresses = {k: v for r in refs for k, v in configmaps[r].items() if k.endswith("_ADDR")}
    assert len(addresses) == 3
    for address in addresses.values():
        host, port = address.removeprefix("dns:///").rsplit(":", 1)
        service = one(objs, "Service", host)
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    source = [e["configMapRef"]["name"] for e in clone["envFrom"]]
    assert "GIT_URL" in configmaps[source[0]]


@pytest.mark.parametrize("name", OVERLAYS)
def test_monitoring_ships_with_every_overlay(name):
    objs = overlay(name)
    dashboard = one(objs, "ConfigMap", "codeindex-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["codeindex-dashboard.json"]) == json.loads(
        (ROOT / "deploy/grafana/dashboards/codeindex.json").read_text())
    one(objs, "ConfigMap", "codeindex-prometheus-rules")


def test_alert_rules_shipped_to_kubernetes_are_the_same():
    assert (ROOT / "k8s/monitoring/alerts.yml").read_text() == (ROOT / "deploy/prometheus/alerts.yml").read_text()


def test_podmonitor_shipped_to_kubernetes_is_the_same():
    assert (ROOT / "k8s/components/prometheus-operator/podmonitor.yaml").read_text() == (
        ROOT / "deploy/prometheus/podmonitor.yaml").read_text()
