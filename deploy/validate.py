#!/usr/bin/env python3
"""Checks ferroserve's deployment files offline: the Helm chart, the KServe
manifests and the Dockerfile.

    .venv/bin/python deploy/validate.py              # every check; exit 1 on a problem
    .venv/bin/python deploy/validate.py --self-test  # also: broken inputs must fail
    .venv/bin/python deploy/validate.py --render deploy/tests/values-all.yaml
                                                     # print the rendered chart

What it checks:
1. The chart: Chart.yaml; the values (defaults, and each deploy/tests/values-*.yaml
   over them) against values.schema.json; the templates rendered with
   deploy/gotemplate.py (Helm's template language, the subset the chart keeps to);
   every rendered document parsed with PyYAML.
2. Every Kubernetes object against the Kubernetes JSON schemas of the oldest and the
   newest release it supports (kubernetes-validate, strict: an unknown field is an
   error), and the KServe objects against the openAPIV3Schema of KServe's CRDs
   vendored in deploy/schemas/ (with unknown fields an error too, as kubectl's
   default strict field validation makes them).
3. What a schema cannot: probes call ferroserve's real health routes (read from
   src/http/), on the REST port the container is started with; ports, Service
   targets, selectors, the HPA's target, mounted Secrets and the files passed to
   --auth-tokens / --tls-* agree; the grace period covers preStop and the drain; the
   KServe runtime runs TF Serving's command line and declares the formats and
   protocols ferroserve serves.
4. The Dockerfile with hadolint, when .venv has it (python/requirements-models.txt
   installs it).
Nothing is downloaded. kubectl cannot help here: without a cluster it cannot map
kinds (`create --dry-run=client` asks the API server).
"""

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gotemplate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "ferroserve"
KSERVE = DEPLOY / "kserve"
SCHEMAS = DEPLOY / "schemas"
TESTS = DEPLOY / "tests"

# Kubernetes releases the chart and manifests must be valid for: the oldest one
# KServe still supports and the newest kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29", "1.37")
# Model formats ferroserve loads (src/backends/) as KServe names them.
FERROSERVE_FORMATS = {"onnx", "sklearn", "tensorflow"}
KSERVE_PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"]
# KServe's kserve-tensorflow-serving command line, which ferroserve must run unchanged.
TF_SERVING_ARGS = [
    "--model_name={{.Name}}",
    "--port=9000",
    "--rest_api_port=8080",
    "--model_base_path=/mnt/models",
    "--rest_api_timeout_in_ms=60000",
]
LIVENESS_PATHS = {"/v2/health/live", "/healthz"}
READINESS_PATHS = {"/v2/health/ready"}
METRICS_PATH = "/metrics"


class Problems:
    """Collects problems; the run fails if there is any."""

    def __init__(self):
        self.items = []

    def add(self, where, message):
        self.items.append(f"{where}: {message}")

    def __bool__(self):
        return bool(self.items)


# --- ferroserve's routes --------------------------------------------------------


def ferroserve_routes():
    """The REST paths ferroserve's router declares (`.route("…", …)` in src/http/)."""
    routes = set()
    for path in (ROOT / "src" / "http").rglob("*.rs"):
        routes.update(re.findall(r'\.route\(\s*"([^"]+)"', path.read_text()))
    if not routes:
        raise SystemExit("validate.py: found no routes under src/http/")
    return routes


# --- the chart ------------------------------------------------------------------


def merge_values(base, override):
    """Helm's coalescing of a values file over the defaults: maps merge, anything
    else replaces, null removes the key."""
    result = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_values(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def load_yaml_file(path):
    with open(path) as f:
        return yaml.safe_load(f)


def check_chart_yaml(chart, problems):
    where = "Chart.yaml"
    for key in ("apiVersion", "name", "version", "appVersion"):
        if key not in chart:
            problems.add(where, f"missing {key}")
    if chart.get("apiVersion") != "v2":
        problems.add(where, "apiVersion must be v2 (Helm 3)")
    if chart.get("name") != CHART.name:
        problems.add(where, f"name must be the directory's, {CHART.name}")
    semver = r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
    if not re.match(semver, str(chart.get("version", ""))):
        problems.add(where, f"version {chart.get('version')!r} is not SemVer")
    cargo = (ROOT / "Cargo.toml").read_text()
    m = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M)
    if m and str(chart.get("appVersion")) != m.group(1):
        problems.add(where, f"appVersion {chart.get('appVersion')!r} is not Cargo.toml's "
                            f"version {m.group(1)!r}")


def render_chart(values_file=None, release="ferroserve", namespace="default", raw=None):
    """Renders the chart as `helm template RELEASE CHART [-f values_file]` would.

    Returns (documents, notes): documents as (template name, parsed object); the
    text of each template is appended to `raw` when it is a list.
    Raises gotemplate.TemplateError or ValueError (values against the schema).
    """
    chart = load_yaml_file(CHART / "Chart.yaml")
    values = load_yaml_file(CHART / "values.yaml") or {}
    if values_file is not None:
        values = merge_values(values, load_yaml_file(values_file) or {})
    schema = json.loads((CHART / "values.schema.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=str)
    if errors:
        raise ValueError("; ".join(
            f"values.{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in errors))
    context = {
        "Values": gotemplate.helm_values(values),
        "Chart": {
            "Name": chart["name"],
            "Version": str(chart["version"]),
            "AppVersion": str(chart.get("appVersion", "")),
            "Description": chart.get("description", ""),
        },
        "Release": {
            "Name": release,
            "Namespace": namespace,
            "Service": "Helm",
            "IsInstall": True,
            "IsUpgrade": False,
            "Revision": 1,
        },
    }
    renderer = gotemplate.Renderer()
    templates = {}
    # Helpers first: their `define`s serve every template.
    paths = sorted((CHART / "templates").iterdir(), key=lambda p: (not p.name.startswith("_"), p.name))
    for path in paths:
        if path.suffix not in (".yaml", ".yml", ".tpl", ".txt"):
            continue
        templates[path.name] = renderer.add(path.read_text(), f"templates/{path.name}")
    documents = []
    notes = None
    for name, nodes in templates.items():
        text = renderer.render(nodes, context)
        if name.startswith("_"):
            continue
        if name == "NOTES.txt":
            notes = text
            continue
        if raw is not None:
            raw.append(f"# Source: ferroserve/templates/{name}\n{text}")
        for part in re.split(r"(?m)^---[ \t]*$", text):
            try:
                obj = yaml.safe_load(part)
            except yaml.YAMLError as e:
                raise ValueError(f"templates/{name} renders YAML that does not parse: {e}\n{part}")
            if obj is None:
                continue
            if not isinstance(obj, dict):
                raise ValueError(f"templates/{name} renders a document that is not a mapping")
            documents.append((f"templates/{name}", obj))
    return documents, notes


# --- schemas --------------------------------------------------------------------


def kubernetes_schema_problems(obj, where, problems):
    import kubernetes_validate

    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            problems.add(where, f"Kubernetes {version} schema: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.add(where, e.message)


def structural_to_jsonschema(node):
    """A CRD's OpenAPI v3 structural schema as JSON Schema, with unknown fields an
    error (strict field validation) except where the CRD keeps them."""
    if isinstance(node, list):
        return [structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: structural_to_jsonschema(v) for k, v in value.items()}
        elif key.startswith("x-kubernetes-") or key in ("nullable", "format", "description"):
            continue
        else:
            out[key] = structural_to_jsonschema(value)
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for field in ("apiVersion", "kind", "metadata"):
            props.setdefault(field, {})
    if (out.get("type") == "object" and "properties" in out
            and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_crd_validators():
    validators = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(path) as f:
            crd = yaml.load(f, Loader=loader)
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def crd_schema_problems(obj, where, validators, problems):
    validator = validators.get((obj.get("apiVersion"), obj.get("kind")))
    if validator is None:
        problems.add(where, f"no vendored CRD schema for {obj.get('apiVersion')} {obj.get('kind')}")
        return
    for e in sorted(validator.iter_errors(obj), key=str):
        path = ".".join(str(p) for p in e.absolute_path) or "(top)"
        problems.add(where, f"{obj['kind']} CRD schema: {path}: {e.message}")
    name = (obj.get("metadata") or {}).get("name", "")
    if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name) or len(name) > 63:
        problems.add(where, f"metadata.name {name!r} is not a DNS-1123 label")


# --- what a schema cannot check ------------------------------------------------


def flag_values(args, flag):
    """Values of `--flag=value` or `--flag value` in a container's args."""
    values = []
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1:])
        elif arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
    return values


def port_of_addr(addr):
    m = re.match(r"^(?:\[[^\]]*\]|[^:]*):(\d+)$", addr)
    return int(m.group(1)) if m else None


def resolve_port(port, container):
    """A probe's or Service's target port (a name or a number) as a containerPort."""
    for p in container.get("ports", []):
        if port == p.get("name") or port == p.get("containerPort"):
            return p["containerPort"]
    return None


def check_probe(probe, kind, container, rest_port, tls, routes, where, problems):
    if probe is None:
        problems.add(where, f"container {container['name']} has no {kind} probe")
        return
    expected = LIVENESS_PATHS if kind == "liveness" else READINESS_PATHS
    if "httpGet" in probe:
        get = probe["httpGet"]
        path = get.get("path")
        if path not in routes:
            problems.add(where, f"{kind} probe path {path!r} is not a ferroserve route")
        elif path not in expected:
            problems.add(where, f"{kind} probe path {path!r} must be one of {sorted(expected)}")
        if resolve_port(get.get("port"), container) != rest_port:
            problems.add(where, f"{kind} probe port {get.get('port')!r} is not the REST port "
                                f"{rest_port} the server listens on")
        scheme = get.get("scheme", "HTTP")
        if scheme != ("HTTPS" if tls else "HTTP"):
            problems.add(where, f"{kind} probe scheme {scheme} but the server serves "
                                f"{'TLS' if tls else 'plain HTTP'}")
    elif "tcpSocket" in probe:
        if resolve_port(probe["tcpSocket"].get("port"), container) != rest_port:
            problems.add(where, f"{kind} probe port is not the REST port {rest_port}")
    else:
        problems.add(where, f"{kind} probe is neither httpGet nor tcpSocket")


def check_chart_objects(documents, values, routes, problems):
    by_kind = {}
    for where, obj in documents:
        by_kind.setdefault(obj["kind"], []).append((where, obj))
    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        problems.add("chart", f"renders {len(deployments)} Deployments, expected 1")
        return
    where, deployment = deployments[0]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    selector = spec["selector"].get("matchLabels", {})
    if any(labels.get(k) != v for k, v in selector.items()):
        problems.add(where, "the Deployment's selector does not match its pod labels")
    containers = [c for c in pod["containers"] if c["name"] == "ferroserve"]
    if not containers:
        problems.add(where, "no container named ferroserve")
        return
    container = containers[0]
    args = container.get("args", [])
    if container.get("command", [None])[0] not in ("ferroserve", "/usr/local/bin/ferroserve") \
            or not args or args[0] != "serve":
        problems.add(where, "the container must run `ferroserve serve`")
    rest_addrs = flag_values(args, "--rest-addr")
    grpc_addrs = flag_values(args, "--grpc-addr")
    rest_port = port_of_addr(rest_addrs[-1]) if rest_addrs else 8501
    grpc_port = port_of_addr(grpc_addrs[-1]) if grpc_addrs else 8500
    declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if declared.get("rest") != rest_port:
        problems.add(where, f"container port 'rest' is {declared.get('rest')}, but the server "
                            f"listens on {rest_port} (--rest-addr)")
    if declared.get("grpc") != grpc_port:
        problems.add(where, f"container port 'grpc' is {declared.get('grpc')}, but the server "
                            f"listens on {grpc_port} (--grpc-addr)")
    tls = bool(flag_values(args, "--tls-cert"))
    if tls != bool(flag_values(args, "--tls-key")):
        problems.add(where, "--tls-cert and --tls-key come together")
    mutual = bool(flag_values(args, "--tls-client-ca"))
    check_probe(container.get("livenessProbe"), "liveness", container, rest_port, tls, routes,
                where, problems)
    check_probe(container.get("readinessProbe"), "readiness", container, rest_port, tls, routes,
                where, problems)
    if mutual and any("httpGet" in (container.get(p) or {})
                      for p in ("livenessProbe", "readinessProbe")):
        problems.add(where, "with --tls-client-ca the kubelet's HTTP probes cannot connect "
                            "(it presents no client certificate)")

    annotations = spec["template"]["metadata"].get("annotations") or {}
    if annotations.get("prometheus.io/scrape") == "true":
        if str(annotations.get("prometheus.io/port")) != str(rest_port):
            problems.add(where, f"prometheus.io/port {annotations.get('prometheus.io/port')} is "
                                f"not the REST port {rest_port}")
        path = annotations.get("prometheus.io/path")
        if path != METRICS_PATH or path not in routes:
            problems.add(where, f"prometheus.io/path {path!r} is not ferroserve's {METRICS_PATH}")
        if annotations.get("prometheus.io/scheme", "http") != ("https" if tls else "http"):
            problems.add(where, "prometheus.io/scheme does not match the server's TLS")

    # Graceful stop: the grace period covers the preStop wait and the drain.
    timeouts = flag_values(args, "--shutdown-timeout")
    drain = float(timeouts[-1]) if timeouts else 30.0
    pre_stop = 0.0
    command = ((container.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command")
    if command and command[0] == "sleep":
        pre_stop = float(command[1])
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= pre_stop + drain:
        problems.add(where, f"terminationGracePeriodSeconds {grace} does not exceed the preStop "
                            f"wait {pre_stop:g} s plus --shutdown-timeout {drain:g} s")

    # Volumes: every mount has a volume; Secrets exist (rendered or named in values).
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {}
    for c in pod.get("initContainers", []) + pod["containers"]:
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                problems.add(where, f"{c['name']} mounts volume {m['name']!r}, which is not declared")
            if c is container:
                mounts[m["mountPath"]] = m["name"]
    rendered_secrets = {o["metadata"]["name"]: o for _, o in by_kind.get("Secret", [])}
    existing_secrets = {s for s in (
        values["auth"]["existingSecret"], values["tls"]["existingSecret"],
        values["tls"]["clientCaSecret"], values["database"]["existingSecret"],
        values["redis"]["existingSecret"]) if s}

    def secret_has(name, key, where_ref):
        if name in rendered_secrets:
            secret = rendered_secrets[name]
            keys = set((secret.get("stringData") or {}) | (secret.get("data") or {}))
            if key not in keys:
                problems.add(where, f"{where_ref}: Secret {name} has no key {key!r}")
        elif name not in existing_secrets:
            problems.add(where, f"{where_ref}: Secret {name!r} is neither rendered nor named in values")

    for volume in volumes.values():
        if "secret" in volume:
            for item in volume["secret"].get("items", []):
                secret_has(volume["secret"]["secretName"], item["key"], f"volume {volume['name']}")
    for env in container.get("env", []):
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret_has(ref["name"], ref["key"], f"env {env['name']}")

    # Files given to the server lie in a mounted Secret under the item's path.
    for flag in ("--auth-tokens", "--tls-cert", "--tls-key", "--tls-client-ca"):
        for file in flag_values(args, flag):
            directory, _, base = file.rpartition("/")
            volume = volumes.get(mounts.get(directory))
            if volume is None or "secret" not in volume:
                problems.add(where, f"{flag} {file}: no Secret is mounted at {directory}")
                continue
            paths = {i["path"] for i in volume["secret"].get("items", [])}
            if paths and base not in paths:
                problems.add(where, f"{flag} {file}: the Secret volume {volume['name']} has no "
                                    f"file {base}")
    # The model repository and the state directory are where the server is told.
    for flag in ("--model-repository", "--state-dir"):
        for directory in flag_values(args, flag):
            if directory not in mounts:
                problems.add(where, f"{flag} {directory} is not a mounted volume")

    # Services select the pods and target declared container ports.
    for swhere, service in by_kind.get("Service", []):
        sel = service["spec"].get("selector", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            problems.add(swhere, "the Service's selector does not select the Deployment's pods")
        for p in service["spec"].get("ports", []):
            if resolve_port(p.get("targetPort", p.get("port")), container) is None:
                problems.add(swhere, f"Service port {p.get('name')} targets {p.get('targetPort')!r}, "
                                     f"which the container does not declare")

    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    for hwhere, hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        if target.get("kind") != "Deployment" or target.get("name") != deployment["metadata"]["name"]:
            problems.add(hwhere, f"scaleTargetRef {target} is not the chart's Deployment")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            problems.add(hwhere, "minReplicas exceeds maxReplicas")
    if hpas and "replicas" in spec:
        problems.add(where, "the Deployment sets replicas while an HPA scales it (each upgrade "
                            "would reset the HPA's count)")

    sa_name = pod.get("serviceAccountName", "default")
    if values["serviceAccount"]["create"] and sa_name not in {
            o["metadata"]["name"] for _, o in by_kind.get("ServiceAccount", [])}:
        problems.add(where, f"serviceAccountName {sa_name} is not the ServiceAccount the chart makes")
    if not (pod.get("securityContext") or {}).get("runAsNonRoot") \
            and not (container.get("securityContext") or {}).get("runAsNonRoot"):
        problems.add(where, "the pod must run as non-root (runAsNonRoot)")


def check_kserve(runtime, service, routes, problems):
    rwhere = "deploy/kserve/clusterservingruntime.yaml"
    spec = runtime["spec"]
    if spec.get("protocolVersions") != KSERVE_PROTOCOLS:
        problems.add(rwhere, f"protocolVersions must be {KSERVE_PROTOCOLS}")
    formats = {f["name"] for f in spec.get("supportedModelFormats", [])}
    if formats != FERROSERVE_FORMATS:
        problems.add(rwhere, f"supportedModelFormats {sorted(formats)} are not the formats "
                             f"ferroserve loads, {sorted(FERROSERVE_FORMATS)}")
    containers = [c for c in spec.get("containers", []) if c.get("name") == "kserve-container"]
    if not containers:
        problems.add(rwhere, "no container named kserve-container")
        return
    container = containers[0]
    command = container.get("command", [])
    args = container.get("args", [])
    line = command + args
    if line[:2] == ["ferroserve", "serve"]:
        flags = line[2:]
    elif line[:1] in (["tensorflow_model_server"], ["/usr/bin/tensorflow_model_server"]):
        flags = line[1:]
    else:
        problems.add(rwhere, f"the container runs {line[:2]}, not `ferroserve serve` or "
                             f"tensorflow_model_server")
        flags = line
    if flags != TF_SERVING_ARGS:
        problems.add(rwhere, f"the flags {flags} are not KServe's TF Serving command line "
                             f"{TF_SERVING_ARGS}")
    rest = int(flag_values(flags, "--rest_api_port")[-1]) if flag_values(flags, "--rest_api_port") else None
    grpc = int(flag_values(flags, "--port")[-1]) if flag_values(flags, "--port") else None
    ports = container.get("ports", [])
    if not ports or ports[0].get("containerPort") != rest:
        problems.add(rwhere, f"the first port (KServe's HTTP port) must be --rest_api_port {rest}")
    grpc_ports = [p for p in ports if "grpc" in p.get("name", "") or "h2c" in p.get("name", "")]
    if [p.get("containerPort") for p in grpc_ports] != [grpc]:
        problems.add(rwhere, f"one port named h2c (or grpc…) must be --port {grpc}")
    annotations = spec.get("annotations", {})
    if str(annotations.get("prometheus.kserve.io/port")) != str(rest):
        problems.add(rwhere, f"prometheus.kserve.io/port must be the REST port {rest}")
    path = annotations.get("prometheus.kserve.io/path")
    if path != METRICS_PATH or path not in routes:
        problems.add(rwhere, f"prometheus.kserve.io/path {path!r} is not ferroserve's {METRICS_PATH}")
    if not (container.get("securityContext") or {}).get("runAsNonRoot"):
        problems.add(rwhere, "kserve-container must set runAsNonRoot")
    if not container.get("resources", {}).get("limits"):
        problems.add(rwhere, "kserve-container must set resource limits")

    swhere = "deploy/kserve/inferenceservice.yaml"
    model = service["spec"]["predictor"].get("model", {})
    if model.get("runtime") != runtime["metadata"]["name"]:
        problems.add(swhere, f"runtime {model.get('runtime')!r} is not the ClusterServingRuntime "
                             f"{runtime['metadata']['name']!r}")
    if model.get("modelFormat", {}).get("name") not in formats:
        problems.add(swhere, f"modelFormat {model.get('modelFormat')} is not one the runtime serves")
    if model.get("protocolVersion", "v1") not in spec.get("protocolVersions", []):
        problems.add(swhere, f"protocolVersion {model.get('protocolVersion')} is not the runtime's")
    if not model.get("storageUri"):
        problems.add(swhere, "storageUri is missing")


# --- the whole run ----------------------------------------------------------------


def value_files():
    return sorted(TESTS.glob("values-*.yaml"))


def check_chart(values_file, routes, problems):
    label = values_file.relative_to(ROOT) if values_file else "default values"
    try:
        documents, notes = render_chart(values_file)
    except (gotemplate.TemplateError, ValueError) as e:
        problems.add(f"chart ({label})", str(e))
        return
    values = merge_values(load_yaml_file(CHART / "values.yaml"),
                          load_yaml_file(values_file) if values_file else {})
    for where, obj in documents:
        kubernetes_schema_problems(obj, f"{where} ({label}) {obj.get('kind')}", problems)
    check_chart_objects([(f"{w} ({label})", o) for w, o in documents], values, routes, problems)
    if not notes or not notes.strip():
        problems.add(f"templates/NOTES.txt ({label})", "renders nothing")


def check_kserve_files(routes, validators, problems):
    objects = {}
    for path in sorted(KSERVE.glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj:
                objects.setdefault(obj["kind"], []).append(obj)
                crd_schema_problems(obj, str(path.relative_to(ROOT)), validators, problems)
    runtimes = objects.get("ClusterServingRuntime", [])
    services = objects.get("InferenceService", [])
    if len(runtimes) != 1 or len(services) != 1:
        problems.add("deploy/kserve", "expected one ClusterServingRuntime and one InferenceService")
        return None
    check_kserve(runtimes[0], services[0], routes, problems)
    return runtimes[0], services[0]


def check_dockerfile(problems):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        print("validate.py: hadolint is not installed; the Dockerfile is not linted")
        return
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    if result.returncode != 0:
        problems.add("Dockerfile", "hadolint:\n" + (result.stdout + result.stderr).strip())
    text = (ROOT / "Dockerfile").read_text()
    if not re.search(r"^USER\s+(?!0\b|root\b)\S+", text, re.M):
        problems.add("Dockerfile", "the final image must run as a non-root USER")
    if not re.search(r"^EXPOSE\s+8500\s+8501\s*$", text, re.M):
        problems.add("Dockerfile", "EXPOSE 8500 8501 is missing")
    if "tensorflow_model_server" not in text:
        problems.add("Dockerfile", "the image must have tensorflow_model_server (a symlink)")


def run_checks(routes, validators):
    problems = Problems()
    chart = load_yaml_file(CHART / "Chart.yaml")
    check_chart_yaml(chart, problems)
    for values_file in [None] + value_files():
        check_chart(values_file, routes, problems)
    check_kserve_files(routes, validators, problems)
    check_dockerfile(problems)
    return problems


# --- self-test: broken inputs must fail --------------------------------------------


def self_test(routes, validators):
    """Each broken input must be refused with the expected message. Returns failures."""
    failures = []

    def expect(name, problems, fragment):
        text = "\n".join(problems.items)
        if fragment not in text:
            failures.append(f"{name}: expected a problem containing {fragment!r}, got:\n"
                            + (text or "(none)"))
        else:
            print(f"self-test: {name}: caught")

    # Broken values files: each says what it must be refused for, in its first line
    # (`# expect: …`).
    for path in sorted((TESTS / "broken").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        if not first.startswith("# expect: "):
            failures.append(f"{path}: the first line must be `# expect: <message fragment>`")
            continue
        problems = Problems()
        check_chart(path, routes, problems)
        expect(str(path.relative_to(ROOT)), problems, first[len("# expect: "):])

    # Rendered objects changed the way a careless edit of a template would.
    # (TLS without client certificates, so the probes are HTTPS GETs.)
    base = TESTS / "values-existing-secrets.yaml"
    documents, _ = render_chart(base)
    values = merge_values(load_yaml_file(CHART / "values.yaml"), load_yaml_file(base))

    def mutated(change):
        docs = copy.deepcopy(documents)
        for _, obj in docs:
            if obj["kind"] == "Deployment":
                change(obj, obj["spec"]["template"]["spec"]["containers"][0])
        problems = Problems()
        for where, obj in docs:
            kubernetes_schema_problems(obj, where, problems)
        check_chart_objects(docs, values, routes, problems)
        return problems

    def probe_path(d, c):
        c["readinessProbe"]["httpGet"]["path"] = "/v2/health/readiness"
    expect("readiness probe on a path ferroserve lacks", mutated(probe_path),
           "readiness probe path '/v2/health/readiness' is not a ferroserve route")

    def live_on_ready(d, c):
        c["livenessProbe"]["httpGet"]["path"] = "/v2/health/ready"
    expect("liveness probe on the readiness route", mutated(live_on_ready),
           "liveness probe path '/v2/health/ready' must be one of")

    def port_mismatch(d, c):
        c["args"] = [a.replace("--rest-addr=0.0.0.0:8080", "--rest-addr=0.0.0.0:9501")
                     for a in c["args"]]
    expect("container port not the one --rest-addr names", mutated(port_mismatch),
           "but the server listens on 9501 (--rest-addr)")

    def unknown_field(d, c):
        c["readinessProbe"]["httpGet"]["paht"] = "/v2/health/ready"
    expect("a misspelt field", mutated(unknown_field), "Additional properties are not allowed")

    def short_grace(d, c):
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 20
    expect("grace period shorter than the drain", mutated(short_grace),
           "terminationGracePeriodSeconds 20 does not exceed")

    def missing_secret(d, c):
        for v in d["spec"]["template"]["spec"]["volumes"]:
            if v["name"] == "auth":
                v["secret"]["items"][0]["path"] = "tokens.txt"
    expect("--auth-tokens names a file the Secret volume lacks", mutated(missing_secret),
           "the Secret volume auth has no file tokens")

    # The KServe manifests, broken.
    runtime = yaml.safe_load((KSERVE / "clusterservingruntime.yaml").read_text())
    service = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())

    def kserve(change_runtime=None, change_service=None):
        r, s = copy.deepcopy(runtime), copy.deepcopy(service)
        if change_runtime:
            change_runtime(r)
        if change_service:
            change_service(s)
        problems = Problems()
        crd_schema_problems(r, "runtime", validators, problems)
        crd_schema_problems(s, "service", validators, problems)
        check_kserve(r, s, routes, problems)
        return problems

    def runtime_args(r):
        r["spec"]["containers"][0]["args"] = [a.replace("--rest_api_port=8080", "--rest_api_port=8081")
                                              for a in r["spec"]["containers"][0]["args"]]
    expect("runtime args differ from TF Serving's", kserve(runtime_args),
           "are not KServe's TF Serving command line")

    def runtime_protocols(r):
        r["spec"]["protocolVersions"] = ["v1", "grpc-v1"]
    expect("runtime without the V2 protocols", kserve(runtime_protocols),
           "protocolVersions must be")

    def runtime_typo(r):
        r["spec"]["supportedModelFormat"] = r["spec"].pop("supportedModelFormats")
    expect("a misspelt runtime field", kserve(runtime_typo), "ClusterServingRuntime CRD schema")

    def service_runtime(s):
        s["spec"]["predictor"]["model"]["runtime"] = "kserve-sklearnserver"
    expect("InferenceService on another runtime", kserve(change_service=service_runtime),
           "is not the ClusterServingRuntime")

    def service_type(s):
        s["spec"]["predictor"]["minReplicas"] = "two"
    expect("InferenceService field of the wrong type", kserve(change_service=service_type),
           "InferenceService CRD schema: spec.predictor.minReplicas")

    # A broken template: outside the subset, or a missing value printed.
    renderer = gotemplate.Renderer()
    for name, source, fragment in (
        ("a function outside the subset", '{{ .Values.x | b64enc }}', "outside the supported subset"),
        ("a missing value printed", 'a: {{ .Values.nope }}', "prints a missing value"),
        ("a nil map's field", 'a: {{ .Values.nope.deeper }}', "nil pointer evaluating"),
        ("an unclosed if", '{{ if .Values.x }}a', "missing {{end}}"),
    ):
        try:
            renderer.render(renderer.add(source, "test"), {"Values": {"x": "1"}})
            failures.append(f"template {name}: rendered")
        except gotemplate.TemplateError as e:
            if fragment not in str(e):
                failures.append(f"template {name}: {e}")
            else:
                print(f"self-test: template {name}: caught")

    # And what renders must render as Helm would.
    for source, expected in (
        ('{{ 1000000.0 }}|{{ .Values.big }}|{{ .Values.small }}', "1e+06|1e+06|8501"),
        ('{{- if .Values.small }}\n  x: {{ .Values.small | quote }}\n{{- end }}', '\n  x: "8501"'),
        ('l:{{- toYaml .Values.list | nindent 2 }}', "l:\n  - a\n  - b"),
        ('{{ range $k, $v := .Values.map }}{{ $k }}={{ $v }};{{ end }}', "a=1;b=x;"),
        ('{{ add .Values.small 1 }} {{ default "d" .Values.empty }} {{ "a\\"b" | quote }}',
         '8502 d "a\\"b"'),
    ):
        values = gotemplate.helm_values({"big": 1000000, "small": 8501, "list": ["a", "b"],
                                         "map": {"b": "x", "a": 1}, "empty": ""})
        got = renderer.render(renderer.add(source, "test"), {"Values": values})
        if got != expected:
            failures.append(f"template {source!r}: rendered {got!r}, expected {expected!r}")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true",
                        help="also check that broken inputs are refused")
    parser.add_argument("--render", metavar="VALUES", nargs="?", const="",
                        help="print the chart rendered with default values (or VALUES over them)")
    args = parser.parse_args()
    if args.render is not None:
        raw = []
        _, notes = render_chart(Path(args.render) if args.render else None, raw=raw)
        print("---\n" + "\n---\n".join(raw))
        print("# NOTES.txt\n" + "\n".join("# " + line for line in notes.splitlines()))
        return 0
    routes = ferroserve_routes()
    validators = load_crd_validators()
    problems = run_checks(routes, validators)
    for item in problems.items:
        print(f"PROBLEM {item}", file=sys.stderr)
    failures = self_test(routes, validators) if args.self_test else []
    for item in failures:
        print(f"SELF-TEST FAILED {item}", file=sys.stderr)
    if problems or failures:
        print(f"validate.py: {len(problems.items)} problems, {len(failures)} self-test failures",
              file=sys.stderr)
        return 1
    checked = 1 + len(value_files())
    print(f"validate.py: the chart ({checked} value sets), the KServe manifests and the "
          f"Dockerfile are valid" + (" ; self-test passed" if args.self_test else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
