#!/usr/bin/env python3
"""Policy checks over rendered Kubernetes manifests (run by scripts/check-k8s).

    k8s_policy.py --repo ROOT --readme README.md --kustomize-root k8s \
        --render NAME PROFILE FILE [--render ...]

NAME is what the report calls a render (e.g. `eks-cpu-hpa`), PROFILE which rules apply to it
(`local` or `eks`), FILE the output of `kubectl kustomize`.

The checks run category by category over every render; the first category with a violation
prints every violation it found and ends the run with exit code 1. Categories:

  images       explicit tags (no :latest); eks: our images from ECR; local: never pulled
  resources    cpu + memory requests and limits on every container and initContainer
  probes       liveness + readiness on every container
  security     runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, capabilities
               drop ALL, seccomp RuntimeDefault, Secrets as mounted files and never as
               environment variables (exemptions below, by name)
  shutdown     terminationGracePeriodSeconds longer than each service's drain
  references   Service/PDB/NetworkPolicy selectors match pods, Service target ports exist,
               Ingress backends exist, referenced ConfigMaps/Secrets/ServiceAccounts exist,
               one autoscaler per workload and no fixed replica count under it
  env          every variable a service needs in the cluster is set, and every variable set
               is one the README's Configuration table lists for that service; NAME_FILE
               counts as NAME when it names a key of a Secret mounted read-only
  secrets      secretGenerator sources are gitignored and untracked (only *.example
               templates are committed), and no Secret value appears in a committable file
"""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Our services: app.kubernetes.io/name of their pod templates.
SERVICES = ("gateway", "auth", "storage", "converter", "notifier")

# Variables each service must get in the cluster because their defaults only make sense on
# one machine (127.0.0.1 addresses, embedded SQLite/queue/outbox) or in a terminal.
REQUIRED_ENV = {
    "gateway": {"AUTH_URL", "STORAGE_URL", "AMQP_URL", "LOG_FORMAT"},
    "auth": {"DATABASE_URL", "JWT_SECRET", "LOG_FORMAT"},
    "storage": {"MONGODB_URI", "LOG_FORMAT"},
    "converter": {"STORAGE_URL", "AMQP_URL", "LOG_FORMAT"},
    "notifier": {"STORAGE_URL", "AMQP_URL", "SMTP_URL", "PUBLIC_BASE_URL", "MAIL_FROM", "LOG_FORMAT"},
}

# How long each service may take to drain after SIGTERM (on top of its preStop sleep).
# gateway: an upload or download may need a minute; storage: it carries those same streams;
# auth: unary calls with a 10 s deadline. The workers' drain is their SHUTDOWN_GRACE_SECONDS
# (read from their ConfigMap, README defaults otherwise).
DRAIN_SECONDS = {"gateway": 60, "auth": 30, "storage": 60}
WORKER_GRACE_DEFAULTS = {"converter": 25, "notifier": 10}

# Third-party containers that may not meet a check, by (workload name, container name), with
# the reason. Our five services can never be exempted (enforced below). Nothing else is
# skipped: a third-party container not listed here gets every check.
EXEMPTIONS: dict[tuple[str, str], dict[str, str]] = {
    ("rabbitmq", "rabbitmq"): {
        "readOnlyRootFilesystem": "the rabbitmq image's entrypoint and server write under "
        "/etc/rabbitmq and /var/log/rabbitmq, not only to the data volume",
    },
}

# The settings that hold a secret, whose NAME_FILE form (a key of a mounted Secret) stands for
# NAME: ours (service-kit's Secret-typed settings) and the local datastores' images'.
SECRET_SETTINGS = {
    "JWT_SECRET", "DATABASE_URL", "MONGODB_URI", "AMQP_URL", "SMTP_URL", "ADMIN_PASSWORD",
    "MARIADB_ROOT_PASSWORD", "MARIADB_PASSWORD", "MONGO_INITDB_ROOT_PASSWORD",
}

# Kinds whose pod template we read.
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

# A Secret value shorter than this is not searched for in committed files (too many false
# matches, and no real credential is that short).
MIN_SECRET_LEN = 8

CATEGORIES = ["images", "resources", "probes", "security", "shutdown", "references", "env", "secrets"]


@dataclass
class Render:
    name: str
    profile: str
    docs: list[dict]

    def of_kind(self, *kinds: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") in kinds]

    def find(self, kind: str, name: str) -> dict | None:
        for d in self.docs:
            if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
                return d
        return None


@dataclass
class Pod:
    """One pod template of a workload (or a bare Pod)."""

    render: Render
    kind: str
    name: str
    labels: dict
    spec: dict
    workload: dict

    @property
    def where(self) -> str:
        return f"[{self.render.name}] {self.kind}/{self.name}"

    @property
    def app(self) -> str | None:
        return self.labels.get("app.kubernetes.io/name")

    def containers(self, include_init: bool = True):
        for c in self.spec.get("containers") or []:
            yield "container", c
        if include_init:
            for c in self.spec.get("initContainers") or []:
                yield "initContainer", c


@dataclass
class Result:
    checked: dict[str, int] = field(default_factory=dict)  # render name -> items checked
    problems: list[str] = field(default_factory=list)

    def count(self, render: Render, n: int = 1) -> None:
        self.checked[render.name] = self.checked.get(render.name, 0) + n


# --------------------------------------------------------------------------------------------
# Loading


def load_render(name: str, profile: str, path: Path) -> Render:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as e:
        sys.exit(f"ERROR: {path}: not valid YAML: {e}")
    return Render(name, profile, docs)


def pods_of(render: Render) -> list[Pod]:
    pods = []
    for d in render.docs:
        kind = d.get("kind")
        meta = d.get("metadata", {})
        if kind in WORKLOAD_KINDS:
            template = d.get("spec", {}).get("template", {})
            pods.append(Pod(render, kind, meta.get("name"), template.get("metadata", {}).get("labels") or {},
                            template.get("spec") or {}, d))
        elif kind == "CronJob":
            template = d["spec"]["jobTemplate"]["spec"]["template"]
            pods.append(Pod(render, kind, meta.get("name"), template.get("metadata", {}).get("labels") or {},
                            template.get("spec") or {}, d))
        elif kind == "Pod":
            pods.append(Pod(render, kind, meta.get("name"), meta.get("labels") or {}, d.get("spec") or {}, d))
    return pods


def parse_readme(readme: Path) -> dict[str, set[str]]:
    """service -> variables it reads, from the README's Configuration table."""
    text = readme.read_text()
    match = re.search(r"^## Configuration\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not match:
        sys.exit(f"ERROR: {readme}: no '## Configuration' section")
    reads: dict[str, set[str]] = {s: set() for s in SERVICES}
    rows = 0
    for line in match.group(1).splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= set("-: ") or cells[0] == "variable":
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        users = [u.strip().lower() for u in cells[1].split(",") if u.strip()]
        if not names or not users:
            sys.exit(f"ERROR: {readme}: cannot read the Configuration row: {line}")
        rows += 1
        for user in users:
            if user == "all":
                targets = SERVICES
            elif user in SERVICES:
                targets = (user,)
            elif user in ("cli", "tests"):
                continue  # not deployed
            else:
                sys.exit(f"ERROR: {readme}: Configuration row names an unknown user '{user}': {line}")
            for t in targets:
                reads[t].update(names)
    if rows < 10:
        sys.exit(f"ERROR: {readme}: found only {rows} rows in the Configuration table")
    return reads


# --------------------------------------------------------------------------------------------
# Helpers


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels + matchExpressions); an empty one matches everything."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def exempt(pod: Pod, container: dict, check: str) -> str | None:
    reason = EXEMPTIONS.get((pod.name, container.get("name")), {}).get(check)
    return reason


def pod_security(pod: Pod) -> dict:
    return pod.spec.get("securityContext") or {}


def effective(pod: Pod, container: dict, key: str):
    """A container securityContext field, falling back to the pod's (for fields both have)."""
    csc = container.get("securityContext") or {}
    if key in csc:
        return csc[key]
    return pod_security(pod).get(key)


def secret_values(doc: dict) -> dict[str, str]:
    out = {}
    for k, v in (doc.get("data") or {}).items():
        try:
            out[k] = base64.b64decode(v).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - a broken value is reported by schema validation
            out[k] = ""
    for k, v in (doc.get("stringData") or {}).items():
        out[k] = str(v)
    return out


# The keys cert-manager writes into the Secret of a Certificate.
CERTIFICATE_SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}


def secret_keys(render: Render, name: str) -> set[str] | None:
    """The keys of the Secret `name`: one in the render, or one a cert-manager Certificate of
    the render makes (spec.secretName); None when neither exists."""
    doc = render.find("Secret", name)
    if doc is not None:
        return set(secret_values(doc))
    if any(c["spec"].get("secretName") == name for c in render.of_kind("Certificate")):
        return set(CERTIFICATE_SECRET_KEYS)
    return None


def configmap_values(doc: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (doc.get("data") or {}).items()}


def env_of(pod: Pod, container: dict, problems: list[str]) -> dict[str, tuple[str, str | None]]:
    """Variable -> (where it comes from, its value when known) for one container."""
    r = pod.render
    env: dict[str, tuple[str, str | None]] = {}
    # A Secret's values are never read, only its keys.
    sources = (
        ("configMapRef", "ConfigMap", configmap_values),
        ("secretRef", "Secret", lambda doc: dict.fromkeys(secret_values(doc))),
    )
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for ref_key, kind, values_of in sources:
            if ref_key not in src:
                continue
            name = src[ref_key]["name"]
            doc = r.find(kind, name)
            if doc is None:
                if not src[ref_key].get("optional"):
                    problems.append(f"{pod.where}: envFrom {kind} '{name}' is not in the render")
                continue
            for k, v in values_of(doc).items():
                env[prefix + k] = (f"{kind}/{name}", v)
    for e in container.get("env") or []:
        value_from = e.get("valueFrom") or {}
        if "value" in e:
            env[e["name"]] = ("env", str(e["value"]))
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            env[e["name"]] = (f"Secret/{ref['name']}", None)
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            cm = r.find("ConfigMap", ref["name"])
            env[e["name"]] = (f"ConfigMap/{ref['name']}", configmap_values(cm).get(ref["key"]) if cm else None)
        else:
            env[e["name"]] = ("env", None)
    for var, (source, value) in list(env.items()):
        if not var.endswith("_FILE") or value is None:
            continue
        secret = mounted_secret_file(pod, container, value, problems)
        name = var.removesuffix("_FILE")
        if name not in SECRET_SETTINGS:
            continue  # a path setting of its own (TLS_CERT_FILE): checked above, kept as it is
        if secret is None:
            problems.append(f"{pod.where} container {container.get('name')}: {var}={value} is not in a Secret mounted into the container")
            continue
        del env[var]
        env[name] = (f"{secret} (file)", None)
    return env


def mounted_secret_file(pod: Pod, container: dict, path: str, problems: list[str]) -> str | None:
    """`Secret/NAME key KEY` when `path` is a key's file in a Secret mounted into `container`
    (a mount that is not read-only, or a key the Secret lacks, is reported), else None."""
    where = f"{pod.where} container {container.get('name')}"
    volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        prefix = mount["mountPath"].rstrip("/") + "/"
        volume = volumes.get(mount["name"]) or {}
        if not path.startswith(prefix) or "secret" not in volume:
            continue
        key = path[len(prefix):]
        name = volume["secret"]["secretName"]
        if not mount.get("readOnly"):
            problems.append(f"{where}: the Secret '{name}' holding {path} is not mounted readOnly")
        items = {i["path"]: i["key"] for i in volume["secret"].get("items") or []}
        key = items.get(key, key) if items else key
        keys = secret_keys(pod.render, name)
        if keys is not None and key not in keys:
            problems.append(f"{where}: {path} names key {key}, which Secret/{name} does not hold")
        return f"Secret/{name} key {key}"
    return None


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


# --------------------------------------------------------------------------------------------
# Checks


def checked_containers(renders: list[Render], res: Result):
    """Every container of every pod of `renders` (init containers too), counted as checked."""
    for r in renders:
        for pod in pods_of(r):
            for what, c in pod.containers():
                res.count(r)
                yield r, pod, what, c


def check_images(renders: list[Render]) -> Result:
    res = Result()
    ecr = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/mp3converter/(?P<svc>[a-z]+)$")
    for r, pod, what, c in checked_containers(renders, res):
        image = c.get("image", "")
        where = f"{pod.where} {what} {c.get('name')}"
        name, tag, digest = image, None, None
        if "@" in name:
            name, digest = name.split("@", 1)
        if ":" in name.rsplit("/", 1)[-1]:
            name, tag = name.rsplit(":", 1)
        if not tag and not digest:
            res.problems.append(f"{where}: image '{image}' has no tag (means :latest)")
        elif tag == "latest":
            res.problems.append(f"{where}: image '{image}' uses :latest")
        ours = pod.app in SERVICES
        if ours and r.profile == "eks":
            m = ecr.match(name)
            if not m or m.group("svc") != pod.app:
                res.problems.append(
                    f"{where}: image '{image}' is not <account>.dkr.ecr.<region>.amazonaws.com/mp3converter/{pod.app}"
                )
        if ours and r.profile in ("local", "podman"):
            local_name = {"local": "mp3converter", "podman": "localhost/mp3converter"}[r.profile]
            if name != f"{local_name}/{pod.app}":
                res.problems.append(f"{where}: image '{image}' is not the locally built {local_name}/{pod.app}")
            if c.get("imagePullPolicy") not in ("IfNotPresent", "Never"):
                res.problems.append(
                    f"{where}: imagePullPolicy must be IfNotPresent or Never for a locally loaded image"
                )
    return res


def check_resources(renders: list[Render]) -> Result:
    res = Result()
    for _, pod, what, c in checked_containers(renders, res):
        resources = c.get("resources") or {}
        for section in ("requests", "limits"):
            for key in ("cpu", "memory"):
                if not (resources.get(section) or {}).get(key):
                    res.problems.append(
                        f"{pod.where} {what} {c.get('name')}: no resources.{section}.{key}"
                    )
    return res


def check_probes(renders: list[Render]) -> Result:
    res = Result()
    for r in renders:
        for pod in pods_of(r):
            if pod.kind in ("Job", "CronJob"):
                continue  # run-to-completion pods have no liveness/readiness
            # initContainers run to completion before the pod starts and take no probes.
            for what, c in pod.containers(include_init=False):
                res.count(r)
                for probe in ("livenessProbe", "readinessProbe"):
                    if not c.get(probe):
                        if exempt(pod, c, probe):
                            continue
                        res.problems.append(f"{pod.where} {what} {c.get('name')}: no {probe}")
    return res


def check_security(renders: list[Render]) -> Result:
    res = Result()
    for (workload, _), checks in EXEMPTIONS.items():
        if workload in SERVICES:
            res.problems.append(f"scripts/k8s_policy.py: EXEMPTIONS must not list our service '{workload}' ({checks})")
    for _, pod, what, c in checked_containers(renders, res):
        where = f"{pod.where} {what} {c.get('name')}"
        csc = c.get("securityContext") or {}

        def need(check: str, ok: bool, message: str) -> None:
            if not ok and not exempt(pod, c, check):
                res.problems.append(f"{where}: {message}")

        run_as_user = effective(pod, c, "runAsUser")
        need("runAsNonRoot", effective(pod, c, "runAsNonRoot") is True,
             "runAsNonRoot is not true (container or pod securityContext)")
        need("runAsUser", isinstance(run_as_user, int) and run_as_user > 0,
             f"runAsUser must be a numeric non-root user, got {run_as_user!r}")
        need("readOnlyRootFilesystem", csc.get("readOnlyRootFilesystem") is True,
             "securityContext.readOnlyRootFilesystem is not true")
        need("allowPrivilegeEscalation", csc.get("allowPrivilegeEscalation") is False,
             "securityContext.allowPrivilegeEscalation is not false")
        drops = [d.upper() for d in ((csc.get("capabilities") or {}).get("drop") or [])]
        need("capabilities", "ALL" in drops, "securityContext.capabilities.drop does not hold ALL")
        need("privileged", not csc.get("privileged"), "runs privileged")
        # CKV_K8S_35: a Secret in the environment shows in /proc/PID/environ, `kubectl
        # describe` and crash dumps; mounted files do not.
        secret_env = [f"envFrom Secret/{src['secretRef']['name']}" for src in c.get("envFrom") or [] if "secretRef" in src]
        secret_env += [f"env {e['name']} from Secret/{e['valueFrom']['secretKeyRef']['name']}"
                       for e in c.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})]
        need("secretsAsFiles", not secret_env,
             f"takes a Secret through the environment ({', '.join(secret_env)}): mount it read-only and set NAME_FILE")
        seccomp = (effective(pod, c, "seccompProfile") or {}).get("type")
        need("seccompProfile", seccomp == "RuntimeDefault",
             f"seccompProfile must be RuntimeDefault (container or pod), got {seccomp!r}")
    if pod.spec.get("hostNetwork") or pod.spec.get("hostPID") or pod.spec.get("hostIPC"):
        res.problems.append(f"{pod.where}: uses the host's network/PID/IPC namespace")
    return res


def prestop_sleep(container: dict) -> int:
    pre = ((container.get("lifecycle") or {}).get("preStop") or {})
    return int((pre.get("sleep") or {}).get("seconds") or 0)


def check_shutdown(renders: list[Render]) -> Result:
    res = Result()
    for r in renders:
        for pod in pods_of(r):
            if pod.app not in SERVICES:
                continue
            res.count(r)
            grace = pod.spec.get("terminationGracePeriodSeconds", 30)
            container = (pod.spec.get("containers") or [{}])[0]
            sleep = prestop_sleep(container)
            if pod.app in DRAIN_SECONDS:
                drain, why = DRAIN_SECONDS[pod.app], "its drain"
            else:
                env = env_of(pod, container, [])
                value = (env.get("SHUTDOWN_GRACE_SECONDS") or (None, None))[1]
                drain = int(value) if value is not None else WORKER_GRACE_DEFAULTS[pod.app]
                why = "SHUTDOWN_GRACE_SECONDS"
            if grace <= sleep + drain:
                res.problems.append(
                    f"{pod.where}: terminationGracePeriodSeconds {grace} must exceed preStop sleep {sleep}"
                    f" + {why} {drain} = {sleep + drain}"
                )
    return res


def check_references(renders: list[Render]) -> Result:
    res = Result()
    for r in renders:
        pods = pods_of(r)

        def matching(selector: dict | None) -> list[Pod]:
            return [p for p in pods if selector_matches(selector, p.labels)]

        for svc in r.of_kind("Service"):
            res.count(r)
            name = svc["metadata"]["name"]
            selector = (svc.get("spec") or {}).get("selector")
            if not selector:
                continue  # selector-less Service (manual Endpoints): nothing to match
            targets = matching({"matchLabels": selector})
            if not targets:
                res.problems.append(f"[{r.name}] Service/{name}: selector {selector} matches no pod template")
                continue
            for port in svc["spec"].get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                found = False
                for p in targets:
                    for c in p.spec.get("containers") or []:
                        for cp in c.get("ports") or []:
                            if target in (cp.get("name"), cp.get("containerPort")):
                                found = True
                if not found:
                    res.problems.append(
                        f"[{r.name}] Service/{name}: targetPort {target!r} is not a container port of"
                        f" {', '.join(p.name for p in targets)}"
                    )

        for pdb in r.of_kind("PodDisruptionBudget"):
            res.count(r)
            if not matching(pdb["spec"].get("selector")):
                res.problems.append(f"[{r.name}] PodDisruptionBudget/{pdb['metadata']['name']}: selector matches no pod")

        for np in r.of_kind("NetworkPolicy"):
            res.count(r)
            name = np["metadata"]["name"]
            spec = np.get("spec") or {}
            if spec.get("podSelector") and not matching(spec["podSelector"]):
                res.problems.append(f"[{r.name}] NetworkPolicy/{name}: podSelector matches no pod")
            for rule in spec.get("ingress") or []:
                for peer in rule.get("from") or []:
                    # A podSelector alone means pods of this namespace: they must exist here.
                    if "podSelector" in peer and "namespaceSelector" not in peer and not matching(peer["podSelector"]):
                        res.problems.append(
                            f"[{r.name}] NetworkPolicy/{name}: 'from' podSelector {peer['podSelector']} matches no pod"
                        )

        for ing in r.of_kind("Ingress"):
            res.count(r)
            for rule in ing["spec"].get("rules") or []:
                for path in (rule.get("http") or {}).get("paths") or []:
                    backend = path["backend"].get("service") or {}
                    svc = r.find("Service", backend.get("name"))
                    if svc is None:
                        res.problems.append(
                            f"[{r.name}] Ingress/{ing['metadata']['name']}: backend Service '{backend.get('name')}' is not in the render"
                        )
                        continue
                    want = backend.get("port") or {}
                    if not any(
                        want.get("number") == p.get("port") or (want.get("name") and want.get("name") == p.get("name"))
                        for p in svc["spec"].get("ports") or []
                    ):
                        res.problems.append(
                            f"[{r.name}] Ingress/{ing['metadata']['name']}: Service '{backend.get('name')}' has no port {want}"
                        )

        for pod in pods:
            res.count(r)
            selector = (pod.workload.get("spec") or {}).get("selector")
            if pod.kind != "Pod" and selector is not None and not selector_matches(selector, pod.labels):
                res.problems.append(f"{pod.where}: spec.selector {selector} does not match its own pod template's labels")
            sa = pod.spec.get("serviceAccountName")
            if sa and sa != "default" and r.find("ServiceAccount", sa) is None:
                res.problems.append(f"{pod.where}: ServiceAccount '{sa}' is not in the render")
            for _, c in pod.containers():
                env_of(pod, c, res.problems)  # reports missing envFrom sources
                for e in c.get("env") or []:
                    vf = e.get("valueFrom") or {}
                    for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                        ref = vf.get(key)
                        if ref and not ref.get("optional"):
                            doc = r.find(kind, ref["name"])
                            values = (secret_values(doc) if kind == "Secret" else configmap_values(doc)) if doc else {}
                            if ref["key"] not in values:
                                res.problems.append(f"{pod.where}: env {e['name']} needs {kind}/{ref['name']} key {ref['key']}")
            for vol in pod.spec.get("volumes") or []:
                if "configMap" in vol and not vol["configMap"].get("optional") and not r.find("ConfigMap", vol["configMap"]["name"]):
                    res.problems.append(f"{pod.where}: volume ConfigMap '{vol['configMap']['name']}' is not in the render")
                if "secret" in vol and not vol["secret"].get("optional") and secret_keys(r, vol["secret"]["secretName"]) is None:
                    res.problems.append(f"{pod.where}: volume Secret '{vol['secret']['secretName']}' is not in the render"
                                        " (nor made by a Certificate of it)")

        # cert-manager: each Certificate's issuer is in the render, and a CA issuer's Secret is
        # one a Certificate of the render makes.
        for cert in r.of_kind("Certificate"):
            res.count(r)
            ref = cert["spec"].get("issuerRef") or {}
            if ref.get("kind", "Issuer") == "Issuer" and r.find("Issuer", ref.get("name", "")) is None:
                res.problems.append(f"[{r.name}] Certificate/{cert['metadata']['name']}: Issuer '{ref.get('name')}' is not in the render")
        for issuer in r.of_kind("Issuer"):
            ca = (issuer["spec"].get("ca") or {}).get("secretName")
            if ca and secret_keys(r, ca) is None:
                res.problems.append(f"[{r.name}] Issuer/{issuer['metadata']['name']}: its CA Secret '{ca}' is neither in the render nor made by a Certificate of it")

        # Autoscalers: the target exists, one autoscaler per workload, no fixed replicas.
        scaled: dict[str, list[str]] = {}
        for hpa in r.of_kind("HorizontalPodAutoscaler"):
            ref = hpa["spec"]["scaleTargetRef"]
            scaled.setdefault(f"{ref['kind']}/{ref['name']}", []).append(f"HPA/{hpa['metadata']['name']}")
        for so in r.of_kind("ScaledObject"):
            ref = so["spec"]["scaleTargetRef"]
            scaled.setdefault(f"{ref.get('kind', 'Deployment')}/{ref['name']}", []).append(
                f"ScaledObject/{so['metadata']['name']}"
            )
            auth = (so["spec"].get("triggers") or [{}])[0].get("authenticationRef")
            if auth and r.find(auth.get("kind", "TriggerAuthentication"), auth["name"]) is None:
                res.problems.append(f"[{r.name}] ScaledObject/{so['metadata']['name']}: TriggerAuthentication '{auth['name']}' is not in the render")
        for ta in r.of_kind("TriggerAuthentication"):
            for ref in ta["spec"].get("secretTargetRef") or []:
                sec = r.find("Secret", ref["name"])
                if sec is None or ref["key"] not in secret_values(sec):
                    res.problems.append(
                        f"[{r.name}] TriggerAuthentication/{ta['metadata']['name']}: Secret '{ref['name']}' key '{ref['key']}' is not in the render"
                    )
        for target, scalers in scaled.items():
            res.count(r)
            kind, name = target.split("/", 1)
            workload = r.find(kind, name)
            if workload is None:
                res.problems.append(f"[{r.name}] {', '.join(scalers)}: target {target} is not in the render")
                continue
            if len(scalers) > 1:
                res.problems.append(f"[{r.name}] {target} has more than one autoscaler: {', '.join(scalers)}")
            if "replicas" in workload.get("spec", {}):
                res.problems.append(
                    f"[{r.name}] {target} sets spec.replicas but {', '.join(scalers)} owns the count"
                    " (every apply would reset it)"
                )
    return res


def check_env(renders: list[Render], readme_reads: dict[str, set[str]]) -> Result:
    res = Result()
    for svc, needed in REQUIRED_ENV.items():
        missing = needed - readme_reads[svc]
        if missing:
            res.problems.append(
                f"README Configuration table does not list {sorted(missing)} for {svc}, but the cluster needs them"
            )
    for r in renders:
        seen = set()
        for pod in pods_of(r):
            if pod.app not in SERVICES:
                continue
            seen.add(pod.app)
            for what, c in pod.containers():
                res.count(r)
                where = f"{pod.where} {what} {c.get('name')}"
                env = env_of(pod, c, res.problems)
                for var in sorted(REQUIRED_ENV[pod.app] - env.keys()):
                    res.problems.append(f"{where}: {var} is not set (needed in the cluster; README: used by {pod.app})")
                for var, (source, _) in sorted(env.items()):
                    if var not in readme_reads[pod.app]:
                        res.problems.append(
                            f"{where}: {var} (from {source}) is not a variable the README's Configuration"
                            f" table lists for {pod.app} (a typo?)"
                        )
        for missing in sorted(set(SERVICES) - seen):
            res.problems.append(f"[{r.name}] no pod template for service '{missing}'")
    return res


def generator_sources(kustomize_root: Path) -> list[tuple[Path, Path]]:
    """(kustomization file, source file) for every secretGenerator file/env source."""
    out = []
    for kfile in sorted(kustomize_root.rglob("kustomization.y*ml")):
        doc = yaml.safe_load(kfile.read_text()) or {}
        for gen in doc.get("secretGenerator") or []:
            sources = list(gen.get("files") or []) + list(gen.get("envs") or [])
            if gen.get("env"):
                sources.append(gen["env"])
            for src in sources:
                path = src.split("=", 1)[1] if "=" in src else src
                out.append((kfile, (kfile.parent / path).resolve()))
    return out


def parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            values[k.strip()] = v
    return values


def check_secrets(renders: list[Render], repo: Path, kustomize_root: Path) -> Result:
    res = Result()
    if git(repo, "rev-parse", "--is-inside-work-tree").returncode != 0:
        res.problems.append(f"{repo} is not a git work tree: cannot tell committed files from ignored ones")
        return res
    repo = repo.resolve()

    # 1. The generator sources: never tracked, always ignored, each with a committed template.
    real_files = []
    for kfile, src in generator_sources(kustomize_root):
        rel = src.relative_to(repo) if src.is_relative_to(repo) else src
        res.checked["sources"] = res.checked.get("sources", 0) + 1
        where = f"{kfile.relative_to(repo)}: secretGenerator source {rel}"
        if src.name.endswith(".example"):
            res.problems.append(f"{where}: generate Secrets from the real file, not from the .example template")
            continue
        if git(repo, "ls-files", "--error-unmatch", "--", str(rel)).returncode == 0:
            res.problems.append(f"{where}: is tracked by git (a real secret file must never be committed)")
        if git(repo, "check-ignore", "-q", "--no-index", "--", str(rel)).returncode != 0:
            res.problems.append(f"{where}: is not gitignored (add it to the .gitignore next to it)")
        template = src.with_name(src.name + ".example")
        if not template.is_file():
            res.problems.append(f"{where}: has no {template.name} template next to it")
        elif git(repo, "check-ignore", "-q", "--no-index", "--", str(template.relative_to(repo))).returncode == 0:
            res.problems.append(f"{where}: its template {template.name} is gitignored (it must be committed)")
        if src.is_file():
            real_files.append(src)

    # Whatever git tracks in a secrets/ folder must be a template (or its .gitignore).
    tracked = git(repo, "ls-files", "-z", "--", str(kustomize_root.relative_to(repo)))
    for rel in filter(None, tracked.stdout.split("\0")):
        parts = Path(rel).parts
        if "secrets" in parts[:-1] and not (rel.endswith(".example") or parts[-1] == ".gitignore"):
            res.problems.append(f"{rel}: is tracked by git, but only *.example templates may be committed in a secrets/ folder")

    # 2. No Secret value in a committable file (tracked, or untracked and not ignored), other
    #    than the *.example templates. Values are never printed.
    listed = git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    corpus = []
    for rel in filter(None, listed.stdout.split("\0")):
        path = repo / rel
        if rel.endswith(".example") or not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            corpus.append((rel, path.read_text()))
        except (UnicodeDecodeError, OSError):
            continue  # binary
    values: list[tuple[str, str]] = []
    for r in renders:
        for sec in r.of_kind("Secret"):
            for key, value in secret_values(sec).items():
                values.append((f"[{r.name}] Secret/{sec['metadata']['name']} key {key}", value))
    for src in real_files:  # the real files in this work tree, if any (never rendered here)
        for key, value in parse_env_file(src).items():
            values.append((f"{src.relative_to(repo)} key {key}", value))
    for label, value in values:
        res.checked["values"] = res.checked.get("values", 0) + 1
        if len(value) < MIN_SECRET_LEN:
            continue
        for rel, text in corpus:
            if value in text:
                res.problems.append(f"{label}: its value appears in the committable file {rel}")
    return res


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True, help="the repository (git work tree)")
    parser.add_argument("--readme", type=Path, required=True, help="README.md with the Configuration table")
    parser.add_argument("--kustomize-root", type=Path, required=True,
                        help="the repository's k8s/ directory (for secretGenerator sources)")
    parser.add_argument("--render", nargs=3, action="append", metavar=("NAME", "PROFILE", "FILE"), required=True)
    args = parser.parse_args()

    renders = []
    for name, profile, path in args.render:
        if profile not in ("local", "eks", "podman"):
            parser.error(f"unknown profile {profile!r} (local, eks or podman)")
        renders.append(load_render(name, profile, Path(path)))
    readme_reads = parse_readme(args.readme)

    runs = {
        "images": lambda: check_images(renders),
        "resources": lambda: check_resources(renders),
        "probes": lambda: check_probes(renders),
        "security": lambda: check_security(renders),
        "shutdown": lambda: check_shutdown(renders),
        "references": lambda: check_references(renders),
        "env": lambda: check_env(renders, readme_reads),
        "secrets": lambda: check_secrets(renders, args.repo, args.kustomize_root.resolve()),
    }
    names = [r.name for r in renders]
    width = max(len(c) for c in CATEGORIES)
    print(f"  {'policy'.ljust(width)}  result  checked ({', '.join(names)})")
    for category in CATEGORIES:
        result = runs[category]()
        if category == "secrets":
            counts = f"{result.checked.get('sources', 0)} generator sources, {result.checked.get('values', 0)} values"
        else:
            counts = ", ".join(str(result.checked.get(n, 0)) for n in names)
        status = "FAIL" if result.problems else "ok"
        print(f"  {category.ljust(width)}  {status.ljust(6)}  {counts}")
        if result.problems:
            print(f"\nERROR: policy '{category}' failed ({len(result.problems)} problem(s)):", file=sys.stderr)
            for p in result.problems:
                print(f"  - {p}", file=sys.stderr)
            rest = CATEGORIES[CATEGORIES.index(category) + 1 :]
            if rest:
                print(f"  (not run after this failure: {', '.join(rest)})", file=sys.stderr)
            return 1
    if any(EXEMPTIONS.values()):
        print("  exemptions (third-party images, by name):")
        for (workload, container), checks in EXEMPTIONS.items():
            for check, reason in checks.items():
                print(f"    {workload}/{container}: {check} ({reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
