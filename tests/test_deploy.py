"""Deployment artefacts, checked offline: Dockerfiles (hadolint), the
compose file (docker-compose config), the Kubernetes kustomizations (kubectl
kustomize, then kubernetes-validate --strict)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}:/usr/local/bin:/usr/bin:/bin")
    assert path, f"{name} is missing: `make test` installs it (see the Makefile's test-deps)"
    return path


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("Dockerfile*")), ids=lambda p: p.name)
def test_hadolint(dockerfile):
    subprocess.run([tool("hadolint"), str(dockerfile)], check=True)


def test_compose_file_is_valid():
    compose = ROOT / "docker/compose.yaml"
    subprocess.run([tool("docker-compose"), "-f", str(compose), "config", "-q"], check=True)
    services = subprocess.run([tool("docker-compose"), "-f", str(compose), "--profile", "gpu", "config",
                               "--services"], check=True, capture_output=True, text=True).stdout.split()
    assert set(services) == {"parser", "embed", "embed-gpu", "store", "orchestrator", "prometheus", "grafana"}


@pytest.mark.parametrize("kustomization", sorted(p.parent for p in (ROOT / "k8s").rglob("kustomization.yaml")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomizations_render_and_validate(kustomization, tmp_path):
    rendered = subprocess.run([tool("kubectl"), "kustomize", str(kustomization)], check=True, capture_output=True,
                              text=True).stdout
    assert "kind:" in rendered
    (tmp_path / "rendered.yaml").write_text(rendered)
    subprocess.run([tool("kubernetes-validate"), "--strict", str(tmp_path / "rendered.yaml")], check=True)


def test_alert_rules_shipped_to_kubernetes_are_the_same():
    assert (ROOT / "k8s/monitoring/alerts.yml").read_text() == (ROOT / "deploy/prometheus/alerts.yml").read_text()
