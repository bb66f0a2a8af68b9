"""deploy/k8s validates against a pinned Kubernetes schema and fits the app it deploys.

No cluster here: kubernetes-validate (pinned in the ``dev`` extra) bundles the
OpenAPI-derived JSON schemas. On top of the schema, the checks a schema cannot do:
probes hit the app's real routes, labels and selectors agree, the HPA targets the
Deployment, the ConfigMap holds only real ServeConfig settings, and resources fit
the int8 model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

pytestmark = pytest.mark.integration

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
#: The Kubernetes version the manifests are written for (oldest supported minor we target).
K8S_VERSION = "1.30.0"
#: Peak RSS of one serving worker with the int8 bert-base model (docs/measured-facts: 190-240 MB).
WORKER_RSS_MB = 250


def _docs() -> list[dict]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append(doc)
    return docs


def _one(kind: str) -> dict:
    found = [d for d in _docs() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _container(name: str) -> dict:
    (found,) = [c for c in _one("Deployment")["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def _api_container() -> dict:
    return _container("api")


def _proxy_container() -> dict:
    return _container("proxy")


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _mem_mb(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


@pytest.mark.parametrize("doc", _docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_matches_pinned_schema(doc):
    # strict: unknown fields (typos such as `readinesProbe`) fail instead of being ignored.
    version = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert version == "1.30"


def test_schema_validation_rejects_a_broken_manifest():
    broken = yaml.safe_load((K8S_DIR / "deployment.yaml").read_text(encoding="utf-8"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    images = {i["name"] for i in kustomization["images"]}
    pods = [_one("Deployment")["spec"]["template"]["spec"], _one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    used = {c["image"].rsplit(":", 1)[0] for pod in pods for c in pod["containers"] + pod["initContainers"]}
    assert used == images


def test_labels_and_selectors_agree():
    deployment, service, hpa = _one("Deployment"), _one("Service"), _one("HorizontalPodAutoscaler")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], "Deployment", deployment["metadata"]["name"])


def test_only_the_proxy_is_reachable_and_gunicorn_listens_on_loopback():
    api, proxy, service = _api_container(), _proxy_container(), _one("Service")
    assert "ports" not in api  # nothing but the proxy may reach Gunicorn (slow clients would hold its threads)
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert env["GUNICORN_BIND"].startswith("127.0.0.1:")
    upstream = env["GUNICORN_BIND"]
    port_names = {p["name"] for p in proxy["ports"]} | {p["containerPort"] for p in proxy["ports"]}
    for svc_port in service["spec"]["ports"]:
        assert svc_port["targetPort"] in port_names
    assert proxy["readinessProbe"]["httpGet"]["port"] in port_names
    conf = (K8S_DIR / "nginx.conf").read_text(encoding="utf-8")
    assert f"server {upstream};" in conf and "listen 8080;" in conf
    assert {p["containerPort"] for p in proxy["ports"]} == {8080}
    mounts = {m["mountPath"]: m for m in proxy["volumeMounts"]}
    assert mounts["/etc/nginx/nginx.conf"]["subPath"] == "nginx.conf"
    volumes = {v["name"]: v for v in _one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    generated = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))["configMapGenerator"]
    assert volumes[mounts["/etc/nginx/nginx.conf"]["name"]]["configMap"]["name"] == generated[0]["name"]
    assert generated[0]["files"] == ["nginx.conf"]


def test_the_pod_proxy_config_is_deploy_nginx_conf_with_a_loopback_upstream():
    import subprocess
    import sys

    script = K8S_DIR.parents[1] / "scripts" / "k8s_nginx_conf.py"
    assert subprocess.run([sys.executable, str(script), "--check"]).returncode == 0, \
        "deploy/k8s/nginx.conf is out of date: run python scripts/k8s_nginx_conf.py"


def _probe_paths() -> dict[str, str]:
    """probe -> the app route it asks for (HTTP probes through the proxy, exec probes on loopback)."""
    out = {}
    for container in (_api_container(), _proxy_container()):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container.get(probe)
            if spec and "httpGet" in spec:
                out[f"{container['name']}.{probe}"] = spec["httpGet"]["path"]
            elif spec and "exec" in spec:
                command = " ".join(spec["exec"]["command"])
                assert "http://127.0.0.1:8000/" in command, command
                out[f"{container['name']}.{probe}"] = "/" + command.split("http://127.0.0.1:8000/", 1)[1].split("'")[0]
    return out


def test_probes_use_the_apps_health_routes():
    paths = _probe_paths()
    assert paths["proxy.readinessProbe"] == "/readyz"
    assert paths["api.livenessProbe"] == "/healthz" and paths["api.startupProbe"] == "/healthz"
    assert "tcpSocket" in _proxy_container()["livenessProbe"]


class _StubPredictor:
    """Stands in for the ONNX model: this test is about routes, not scores."""

    meta = {"version": "k8s-test"}
    version = "k8s-test"

    def predict(self, texts):
        return [{"label": "legal", "is_legal": True, "score": 0.9, "threshold": 0.5} for _ in texts]


def test_probe_paths_answer_200_in_the_real_app():
    from lawclf import serve
    from lawclf.config import ServeConfig

    data = _one("ConfigMap")["data"]
    client = serve.create_app(ServeConfig.from_env(data), predictor=_StubPredictor()).test_client()
    for probe, path in _probe_paths().items():
        assert client.get(path).status_code == 200, f"{probe} {path}"


def test_pod_runs_non_root_with_a_read_only_root():
    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # Kubernetes can only check runAsNonRoot against a numeric user id.
    assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], container["name"]
    tmp_mounts = [m for m in _api_container()["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp_mounts, "a read-only root needs a writable /tmp (Gunicorn heartbeat files)"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[tmp_mounts[0]["name"]]


def test_images_are_pinned_and_pull_policy_explicit():
    pod = _one("Deployment")["spec"]["template"]["spec"]
    for container in pod["containers"] + pod["initContainers"]:
        name, _, tag = container["image"].rpartition(":")
        assert name and tag and tag != "latest", container["image"]
        assert container["imagePullPolicy"] == "IfNotPresent", container["name"]


def test_model_comes_from_a_volume_the_init_container_fills():
    pod = _one("Deployment")["spec"]["template"]["spec"]
    model_dir = _one("ConfigMap")["data"]["LAWCLF_MODEL_DIR"]
    api_mounts = [m for m in _api_container()["volumeMounts"] if model_dir.startswith(m["mountPath"] + "/")]
    assert len(api_mounts) == 1 and api_mounts[0]["readOnly"] is True
    init_mounts = {m["name"] for c in pod["initContainers"] for m in c["volumeMounts"]}
    assert api_mounts[0]["name"] in init_mounts


def test_configmap_holds_only_real_serve_settings():
    from lawclf.config import ServeConfig

    data = _one("ConfigMap")["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    fields = {f"LAWCLF_{name.upper()}" for name in ServeConfig.__dataclass_fields__}
    assert set(data) <= fields, f"unknown settings: {sorted(set(data) - fields)}"
    cfg = ServeConfig.from_env(data)  # parses every value with the server's own rules
    assert cfg.log_text is False


def test_resources_fit_the_int8_model_and_threads_match_the_cpu_limit():
    container = _api_container()
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    workers = int(env["WEB_CONCURRENCY"])
    threads = int(_one("ConfigMap")["data"]["LAWCLF_ORT_THREADS"])
    assert workers * threads == _cpu(limits["cpu"]), "workers x ORT threads should fill the CPU limit, no more"
    assert _cpu(requests["cpu"]) <= _cpu(limits["cpu"])
    # The Gunicorn master preloads the app (a model check) before forking: count it as one more.
    assert _mem_mb(requests["memory"]) >= (workers + 1) * WORKER_RSS_MB
    assert _mem_mb(limits["memory"]) >= _mem_mb(requests["memory"])


def test_hpa_scales_on_cpu_with_a_request_to_measure_against():
    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "cpu" in _api_container()["resources"]["requests"]


def test_the_screening_cronjob_runs_one_pass_at_a_time_with_real_settings():
    import dataclasses

    from lawclf.config import ScreenConfig
    from lawclf.screen import ENV_PREFIX

    cron = _one("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # the pass assumes a single writer
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"] == ["screen", "run"]
    fields = {f.name for f in dataclasses.fields(ScreenConfig)}
    names = [e["name"] for e in container["env"] if e["name"].startswith(ENV_PREFIX)]
    assert names and all(n[len(ENV_PREFIX):].lower() in fields for n in names), names
    # the model comes from the same image as the API's, so both score with one model version
    api_init = _one("Deployment")["spec"]["template"]["spec"]["initContainers"][0]
    assert pod["initContainers"][0]["image"] == api_init["image"]
    model_dir = next(e["value"] for e in container["env"] if e["name"] == ENV_PREFIX + "MODEL_DIR")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert any(model_dir.startswith(m) for m in mounts)
