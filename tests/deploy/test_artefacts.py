"""The deployable artefacts, checked offline: no Docker engine and no cluster exist here.

The Kubernetes manifests (infra/k8s/) are validated against the Kubernetes API's JSON schemas that
kubernetes-validate ships (strict: an unknown field is an error), and then against the application itself: probe
paths are real routes, every PLACECAST_* variable is a real setting with a valid value, the worker's grace period
outlasts its shutdown wait, secrets come from Secrets that hold no value here. The Dockerfile is parsed: stages,
an unprivileged numeric user, no secret, the entrypoint and commands that infra/cli.py really has, COPY sources
that exist and are not ignored by .dockerignore. What only a build or a cluster shows is left unverified.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer
import yaml  # type: ignore[import-untyped]
from pydantic import SecretStr

from infra.settings import PROJECT_ROOT, Settings

K8S = PROJECT_ROOT / "infra" / "k8s"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
# The oldest Kubernetes the manifests are meant for, and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
# Custom resources of the operators: no schema ships for them; checked below against what the app expects.
OPERATOR_KINDS = {("postgresql.cnpg.io/v1", "Cluster"), ("databases.spotahome.com/v1", "RedisFailover")}
WORKLOAD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}
# What the worker needs after its shutdown wait: on_shutdown closes FCM, HTTP and the database (seconds).
WORKER_CLOSE_MARGIN_S = 5


# ---------------------------------------------------------------------------------------------- loading


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@cache
def manifests() -> tuple[tuple[Path, dict[str, Any]], ...]:
    """Every Kubernetes object in infra/k8s/ (kustomizations aside), with its file."""
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in _documents(path):
            if doc.get("kind") != "Kustomization":
                found.append((path, doc))
    return tuple(found)


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    matching = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    assert len(matching) == 1, f"expected one {kind}/{name}, found {len(matching)}"
    return matching[0]


def workloads() -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def placecast_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in workloads():
        for container in containers(workload):
            if container["image"].split(":")[0] == "placecast":
                yield workload, container


def config_map() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap", "placecast-config")["data"]
    return data


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variable the container gets, as {"value": ...} or {"valueFrom": ...}, ConfigMaps included."""
    env: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "only ConfigMaps are read with envFrom (secrets are named one by one)"
        cm = one("ConfigMap", source["configMapRef"]["name"])
        env.update({name: {"value": value} for name, value in cm["data"].items()})
    for item in container.get("env", []):
        env[item["name"]] = {key: value for key, value in item.items() if key != "name"}
    return env


def kustomization(folder: Path) -> dict[str, Any]:
    (doc,) = _documents(folder / "kustomization.yaml")
    return doc


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def env_setting(name: str) -> str:
    """PLACECAST_WORKER_SHUTDOWN_WAIT_S -> worker_shutdown_wait_s, which must be a field of Settings."""
    assert name.startswith("PLACECAST_"), name
    field = name.removeprefix("PLACECAST_").lower()
    assert field in Settings.model_fields, f"{name} is not a setting of infra/settings.py"
    return field


def cli_commands() -> dict[str, Any]:
    """The `placecast` subcommands (typer's click commands), by name."""
    from infra.cli import app

    commands: dict[str, Any] = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    return commands


# ---------------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    checked, custom = 0, set()
    for path, doc in manifests():
        where = f"{path.relative_to(PROJECT_ROOT)}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc["apiVersion"], doc["kind"]) in OPERATOR_KINDS:
            custom.add((doc["apiVersion"], doc["kind"]))
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {'.'.join(map(str, error.path))}: {error}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{where}: {error.message}")
        checked += 1
    assert custom == OPERATOR_KINDS
    assert checked >= 12


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    """The check above is strict: a typo in a probe's name is an error, not an ignored field."""
    broken = json.loads(json.dumps(one("Deployment", "placecast-api")))
    container = pod_spec(broken)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomizations_list_exactly_the_manifests_beside_them() -> None:
    main = kustomization(K8S)
    listed = set(main["resources"])
    beside = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert listed == beside
    assert "secrets.example.yaml" not in listed  # applying placeholders would blank the real Secrets
    operators = kustomization(K8S / "operators")
    assert set(operators["resources"]) == {p.name for p in (K8S / "operators").glob("*.yaml")} - {"kustomization.yaml"}
    for folder, doc in ((K8S, main), (K8S / "operators", operators)):
        for name in doc["resources"]:
            for item in _documents(folder / name):
                if item["kind"] == "Namespace":  # not namespaced itself
                    continue
                assert item["metadata"].get("namespace") == doc["namespace"], f"{name}: {item['metadata']['name']}"
    assert [image["name"] for image in main["images"]] == ["placecast"]


# ---------------------------------------------------------------------------------------------- labels


def test_selectors_match_the_pods_they_mean() -> None:
    for workload in workloads():
        template_labels = workload["spec"]["template"]["metadata"]["labels"]
        if workload["kind"] != "Job":
            assert matches(workload["spec"]["selector"]["matchLabels"], template_labels), workload["metadata"]
        assert matches(template_labels, workload["metadata"]["labels"]), workload["metadata"]["name"]
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads()]
    selectors_of: dict[str, Callable[[dict[str, Any]], dict[str, str]]] = {
        "Service": lambda doc: doc["spec"]["selector"],
        "PodDisruptionBudget": lambda doc: doc["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": lambda doc: doc["spec"]["podSelector"].get("matchLabels", {}),
    }
    for kind, selector_of in selectors_of.items():
        for doc in objects(kind):
            assert any(matches(selector_of(doc), labels) for labels in pods), f"{kind}/{doc['metadata']['name']}"
    # Two workloads never share a selector: a PodDisruptionBudget or Service would count the other's pods.
    selectors = [json.dumps(w["spec"]["selector"], sort_keys=True) for w in workloads() if w["kind"] != "Job"]
    assert len(selectors) == len(set(selectors))


def test_the_api_is_autoscaled_and_never_drained_to_nothing() -> None:
    (hpa,) = objects("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    deployment = one(target["kind"], target["name"])
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    assert "replicas" not in deployment["spec"], "the autoscaler owns the API's replica count"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = one("PodDisruptionBudget", "placecast-api")
    assert matches(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a node drain must be able to proceed"
    worker = one("Deployment", "placecast-worker")
    worker_pdb = one("PodDisruptionBudget", "placecast-worker")
    assert matches(worker_pdb["spec"]["selector"]["matchLabels"], worker["spec"]["template"]["metadata"]["labels"])
    assert 1 <= worker_pdb["spec"]["minAvailable"] < worker["spec"]["replicas"]


def test_the_api_service_reaches_the_port_uvicorn_listens_on() -> None:
    service = one("Service", "placecast-api")
    (container,) = pod_spec(one("Deployment", "placecast-api"))["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
        assert ports[port["targetPort"]] == int(config_map()["PLACECAST_API_PORT"])


# ---------------------------------------------------------------------------------------------- the app


@cache
def app_get_routes() -> frozenset[str]:
    from infra.app import create_app

    app = create_app(Settings(_env_file=None))  # routes only: the lifespan (database, Redis) is not started
    return frozenset(
        route.path
        for route in app.routes
        if "GET" in (getattr(route, "methods", None) or ()) and hasattr(route, "path")
    )


def test_the_api_probes_are_real_routes_of_the_app() -> None:
    deployment = one("Deployment", "placecast-api")
    (container,) = pod_spec(deployment)["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"  # checks PostgreSQL and Redis
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"  # the process only: no restart on failover
    port_names = {port["name"] for port in container["ports"]}
    probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container]
    for _, other in placecast_containers():
        probes += [other[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in other]
    for probe in probes:
        if "httpGet" in probe:
            assert probe["httpGet"]["path"] in app_get_routes(), f"{probe['httpGet']['path']} is not a GET route"
            assert probe["httpGet"]["port"] in port_names


def test_the_route_check_would_catch_a_typo() -> None:
    assert {"/ready", "/health"} <= app_get_routes()
    assert "/healthz" not in app_get_routes()


def test_every_placecast_variable_is_a_real_setting_with_a_valid_value(monkeypatch: pytest.MonkeyPatch) -> None:
    names = set(config_map())
    for _, container in placecast_containers():
        env = container_env(container)
        names |= set(env)
        plain = {name: source["value"] for name, source in env.items() if "value" in source}
        for name in plain:
            env_setting(name)
        # What each container would read: its plain values and stand-ins for its secrets, as the environment.
        with monkeypatch.context() as scope:
            for name in Settings.model_fields:
                scope.delenv(f"PLACECAST_{name.upper()}", raising=False)
            for name, source in env.items():
                scope.setenv(name, source.get("value", "s" * 48))  # a stand-in for each secret
            settings = Settings(_env_file=None)
        for name, value in plain.items():
            field = env_setting(name)
            assert str(getattr(settings, field)).lower() == value.lower(), name
    assert names, "no PLACECAST_* variable found"
    for name in names:
        env_setting(name)
    for name in dockerfile_env():
        if name.startswith("PLACECAST_"):
            env_setting(name)


def test_secrets_come_from_secrets_and_every_required_setting_is_given() -> None:
    required = {name for name, field in Settings.model_fields.items() if field.is_required()}
    secret_fields = {name for name, field in Settings.model_fields.items() if field.annotation is SecretStr}
    assert required, "Settings has required fields (the secrets); if none, this test is looking at the wrong class"
    for workload, container in placecast_containers():
        env = container_env(container)
        given = {env_setting(name) for name in env}
        missing = required - given
        assert not missing, f"{workload['metadata']['name']} does not set {sorted(missing)}"
        for name, source in env.items():
            if env_setting(name) in secret_fields | {"pg_user"}:
                assert "secretKeyRef" in source.get("valueFrom", {}), f"{name} must come from a Secret"
    assert not set(config_map()) & {f"PLACECAST_{name.upper()}" for name in secret_fields}


def _defined_secrets() -> dict[str, set[str]]:
    """Secrets whose names and keys are defined here (with empty values) or made by an operator."""
    defined = {
        doc["metadata"]["name"]: set(doc.get("stringData", {})) | set(doc.get("data", {})) for doc in objects("Secret")
    }
    for cluster in objects("Cluster"):  # CloudNativePG: <cluster>-app holds the owner's credentials
        defined[f"{cluster['metadata']['name']}-app"] = {"username", "password"}
    return defined


def test_every_referenced_secret_is_defined_and_none_holds_a_value() -> None:
    defined = _defined_secrets()
    for doc in objects("Secret"):
        values = {**doc.get("stringData", {}), **doc.get("data", {})}
        assert values and all(value == "" for value in values.values()), f"{doc['metadata']['name']} holds a value"
    for workload in workloads():
        for container in containers(workload):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in defined.get(ref["name"], set()), f"{ref} in {workload['metadata']['name']}"
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                keys = defined.get(volume["secret"]["secretName"], set())
                assert {item["key"] for item in volume["secret"].get("items", [])} <= keys
                assert keys, volume


def test_the_fcm_service_account_is_mounted_where_the_worker_reads_it() -> None:
    worker = one("Deployment", "placecast-worker")
    (container,) = pod_spec(worker)["containers"]
    path = Path(container_env(container)["PLACECAST_FCM_CREDENTIALS_FILE"]["value"])
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod_spec(worker)["volumes"]}
    found = [
        (mount, volumes[name]["secret"])
        for name, mount in mounts.items()
        if "secret" in volumes[name] and Path(mount["mountPath"]) == path.parent
    ]
    assert len(found) == 1, "the FCM service account's folder is not a mounted Secret"
    mount, secret = found[0]
    assert mount.get("readOnly") is True
    assert path.name in {item["path"] for item in secret["items"]}


def test_the_worker_is_given_longer_than_its_shutdown_wait() -> None:
    """Kubernetes kills the pod after terminationGracePeriodSeconds: that must outlast arq's job_completion_wait
    (PLACECAST_WORKER_SHUTDOWN_WAIT_S, the setting's default unless the manifest sets it) plus closing up."""
    worker = one("Deployment", "placecast-worker")
    (container,) = pod_spec(worker)["containers"]
    env = container_env(container)
    default = Settings.model_fields["worker_shutdown_wait_s"].default
    assert isinstance(default, int)
    wait = (
        int(env["PLACECAST_WORKER_SHUTDOWN_WAIT_S"]["value"]) if "PLACECAST_WORKER_SHUTDOWN_WAIT_S" in env else default
    )
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= wait + WORKER_CLOSE_MARGIN_S
    assert "preStop" not in container.get("lifecycle", {}), "a preStop hook would eat into the shutdown wait"


def test_the_api_is_given_longer_than_its_pre_stop_and_graceful_shutdown() -> None:
    api = one("Deployment", "placecast-api")
    (container,) = pod_spec(api)["containers"]
    args = container["args"]
    graceful = int(args[args.index("--graceful-shutdown-s") + 1])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod_spec(api)["terminationGracePeriodSeconds"] > int(pre_stop[1]) + graceful


def test_container_commands_are_placecast_commands_with_valid_options() -> None:
    commands = cli_commands()
    seen = set()
    for workload, container in placecast_containers():
        assert "command" not in container, "the image's entrypoint (placecast) is kept"
        name, *rest = container["args"]
        assert name in commands, f"placecast has no command {name!r} ({workload['metadata']['name']})"
        commands[name].make_context(name, list(rest))  # parses the options as the CLI would; raises if wrong
        seen.add(name)
    assert {"api", "worker", "migrate"} <= seen
    with pytest.raises(Exception, match="--graceful-shutdown"):  # the parse above does refuse a wrong option
        commands["api"].make_context("api", ["--graceful-shutdown", "5"])
    assert one("Job", "placecast-migrate")["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


# ---------------------------------------------------------------------------------------------- hardening


def test_pods_run_unprivileged_with_limits_and_a_read_only_root() -> None:
    uid, gid = dockerfile_user()
    for workload in workloads():
        if not any(c["image"].startswith("placecast") for c in containers(workload)):
            continue
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid and pod["runAsGroup"] == gid, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        assert one("ServiceAccount", spec["serviceAccountName"])["automountServiceAccountToken"] is False
        writable = {
            mount["mountPath"]
            for c in containers(workload)
            for mount in c.get("volumeMounts", [])
            if not mount.get("readOnly")
        }
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"] and "add" not in context["capabilities"], name
            assert context.get("privileged", False) is False, name
            for what in ("cpu", "memory"):
                assert what in container["resources"]["requests"], f"{name}: no {what} request"
            assert "memory" in container["resources"]["limits"], f"{name}: no memory limit"
        # With a read-only root, the settings' scratch folder and /tmp must be volumes.
        assert {config_map()["PLACECAST_VAR_DIR"], "/tmp"} <= writable, name


def test_the_namespace_warns_about_anything_below_the_restricted_profile() -> None:
    (namespace,) = objects("Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce"] in {"baseline", "restricted"}


def test_network_policies_let_the_api_reach_its_database_and_redis_only() -> None:
    api = one("NetworkPolicy", "placecast-api")
    assert set(api["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = api["spec"]["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [int(config_map()["PLACECAST_API_PORT"])]
    egress_ports = {p["port"] for rule in api["spec"]["egress"] for p in rule["ports"]}
    assert {53, int(config_map()["PLACECAST_PG_PORT"]), int(config_map()["PLACECAST_REDIS_PORT"])} <= egress_ports
    closed = one("NetworkPolicy", "placecast-no-ingress")
    assert closed["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in closed["spec"]
    (expression,) = closed["spec"]["podSelector"]["matchExpressions"]
    assert set(expression["values"]) == {"worker", "migrate"}


# ---------------------------------------------------------------------------------------------- operators


def test_the_database_endpoints_are_cloudnativepg_services_of_a_synchronous_postgis_cluster() -> None:
    (cluster,) = objects("Cluster")
    name, spec = cluster["metadata"]["name"], cluster["spec"]
    assert config_map()["PLACECAST_PG_HOST"] == f"{name}-rw"  # the read-write Service: always the primary
    assert config_map()["PLACECAST_PG_PORT"] == "5432"
    assert config_map()["PLACECAST_PG_DATABASE"] == spec["bootstrap"]["initdb"]["database"]
    assert spec["instances"] >= 3
    assert spec["postgresql"]["synchronous"]["number"] >= 1
    assert "postgis" in spec["imageName"]
    assert any("postgis" in sql.lower() for sql in spec["bootstrap"]["initdb"]["postInitApplicationSQL"])
    for _, container in placecast_containers():
        env = container_env(container)
        for variable in ("PLACECAST_PG_USER", "PLACECAST_PG_PASSWORD"):
            assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == f"{name}-app"
    # Connections: every API pod the autoscaler may run, each with its pool and the index's, and the workers.
    (hpa,) = objects("HorizontalPodAutoscaler")
    pool = int(config_map()["PLACECAST_DB_POOL_SIZE"])
    needed = hpa["spec"]["maxReplicas"] * (pool + 2) + one("Deployment", "placecast-worker")["spec"]["replicas"] * 5
    assert int(spec["postgresql"]["parameters"]["max_connections"]) >= 2 * needed  # overflow beyond the pools


def test_the_redis_endpoint_is_the_sentinel_elected_master_of_the_redis_failover() -> None:
    (failover,) = objects("RedisFailover")
    name, spec = failover["metadata"]["name"], failover["spec"]
    assert config_map()["PLACECAST_REDIS_HOST"] == f"rfrm-{name}"  # redis-operator's master Service
    assert config_map()["PLACECAST_REDIS_PORT"] == "6379"
    assert spec["sentinel"]["replicas"] >= 3 and spec["redis"]["replicas"] >= 2
    for _, container in placecast_containers():
        ref = container_env(container)["PLACECAST_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (spec["auth"]["secretPath"], "password")


# ---------------------------------------------------------------------------------------------- Dockerfile


@cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return tuple(instructions)


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    found: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, rest in dockerfile():
        if keyword == "FROM":
            words = rest.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"every stage is named: FROM {rest}"
            found.append((words[2], []))
        elif found:
            found[-1][1].append((keyword, rest))
    return found


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1][1]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def dockerfile_user() -> tuple[int, int]:
    (user,) = [rest for keyword, rest in final_stage() if keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), "USER must be numeric (uid:gid) so runAsNonRoot can verify it"
    return int(uid), int(gid)


def test_the_image_is_built_in_stages_and_runs_without_compilers() -> None:
    names = [name for name, _ in stages()]
    assert len(names) >= 3 and len(set(names)) == len(names)
    assert names[-1] == "runtime"
    for index, (_, body) in enumerate(stages()):
        for keyword, rest in body:
            source = re.search(r"--from=(\S+)", rest)
            if keyword == "COPY" and source:
                assert source.group(1) in names[:index], f"COPY {rest}: no earlier stage {source.group(1)}"
    final = " ".join(rest for keyword, rest in final_stage() if keyword == "RUN")
    assert "npm" not in final and "pip install" not in final, "the runtime stage installs nothing"
    copied = [rest for keyword, rest in final_stage() if keyword == "COPY"]
    assert any("/opt/venv" in rest for rest in copied) and any(rest.endswith("/app /app") for rest in copied)
    build = dict(stages())["build"]
    assert any("admin/node_modules" in rest and "--from=admin-assets" in rest for k, rest in build if k == "COPY")
    assert any("npm ci" in rest for k, rest in dict(stages())["admin-assets"] if k == "RUN")


def test_the_image_runs_as_an_unprivileged_numeric_user() -> None:
    uid, gid = dockerfile_user()
    assert uid >= 1000 and gid >= 1000
    created = " ".join(rest for keyword, rest in final_stage() if keyword == "RUN")
    assert f"--uid {uid}" in created and f"--gid {gid}" in created
    # One USER, set after everything that needs root (creating the user and its folder).
    keywords = [keyword for keyword, _ in final_stage()]
    assert keywords.count("USER") == 1
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_the_entrypoint_is_placecast_with_its_real_commands() -> None:
    entrypoint = [json.loads(rest) for keyword, rest in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoint == [["placecast"]], "exec form: placecast is PID 1's program and receives SIGTERM"
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["placecast"] == "infra.cli:app"
    assert {"api", "worker", "migrate"} <= set(cli_commands())
    (cmd,) = [json.loads(rest) for keyword, rest in final_stage() if keyword == "CMD"]
    assert cmd[0] in cli_commands()
    assert any(keyword == "HEALTHCHECK" for keyword, _ in final_stage()), "say how health is checked (NONE: probes)"
    assert "/opt/venv/bin" in dockerfile_env()["PATH"].split(":")[0]


def test_the_image_bakes_in_no_secret_and_listens_where_the_manifests_expect() -> None:
    env = dockerfile_env()
    secret_fields = {name for name, field in Settings.model_fields.items() if field.annotation is SecretStr}
    for key in env:
        assert not re.search(r"SECRET|PASSWORD|TOKEN|CREDENTIAL", key), f"ENV {key} in the image"
        if key.startswith("PLACECAST_"):
            assert env_setting(key) not in secret_fields
    for keyword, rest in dockerfile():
        if keyword == "ARG":
            assert not re.search(r"SECRET|PASSWORD|TOKEN|KEY", rest.split("=")[0].upper()), f"ARG {rest}"
    assert env["PLACECAST_ENVIRONMENT"] == "production"  # secrets from the environment only, weak ones refused
    assert env["PLACECAST_API_HOST"] == "0.0.0.0"
    assert env["PLACECAST_API_PORT"] == config_map()["PLACECAST_API_PORT"]
    assert env["PLACECAST_VAR_DIR"] == config_map()["PLACECAST_VAR_DIR"]
    exposed = [rest for keyword, rest in final_stage() if keyword == "EXPOSE"]
    assert exposed == [env["PLACECAST_API_PORT"]]


def test_the_python_of_the_image_is_the_one_the_project_requires() -> None:
    (python_image,) = [rest for keyword, rest in dockerfile() if keyword == "ARG" and rest.startswith("PYTHON_IMAGE=")]
    version = re.search(r"python:(\d+)\.(\d+)", python_image)
    assert version, python_image
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    required = re.fullmatch(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert required
    assert (int(version[1]), int(version[2])) >= (int(required[1]), int(required[2]))


def _ignore_patterns() -> list[str]:
    return [
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` (relative to the repository) out of the build context: a pattern
    matches the path or one of its folders; `**/` matches any depth. (No `!` exceptions are used.)"""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in _ignore_patterns():
        assert not pattern.startswith("!"), "exceptions are not modelled here"
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/"):
                tail = pattern[3:]
                segments = prefix.split("/")
                if any(fnmatch.fnmatchcase("/".join(segments[i:]), tail) for i in range(len(segments))):
                    return True
    return False


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build() -> None:
    for path in (
        ".env",
        "var/secrets/secret-key",
        "var/demo-api-key",
        ".venv/bin/python",
        "admin/node_modules/leaflet/dist/leaflet.js",
        ".git/config",
        "infra/__pycache__/cli.cpython-311.pyc",
        "tests/conftest.py",
    ):
        assert ignored(path), f"{path} would be sent to the build"
    for path in ("pyproject.toml", "admin/package-lock.json", "infra/migrations/env.py", "admin/static/app.js"):
        assert not ignored(path), f"{path} is needed by the build"


def test_every_copied_source_exists_is_not_ignored_and_covers_every_package() -> None:
    copied = []
    for keyword, rest in dockerfile():
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _ = shlex.split(rest)
            copied += [s.rstrip("/") for s in sources if not s.startswith("--")]
    assert copied
    for source in copied:
        assert (PROJECT_ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert package in copied, f"package {package} is not copied into the image"
    assert "admin/package-lock.json" in copied  # npm ci installs exactly the locked versions


def test_the_venv_installs_the_pinned_dependencies_from_pyproject() -> None:
    runs = " ".join(rest for keyword, rest in dict(stages())["build"] if keyword == "RUN")
    assert "['project']['dependencies']" in runs and "--only-binary=:all:" in runs
    assert "pip install --no-deps -e ." in runs
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert all("==" in requirement for requirement in pyproject["project"]["dependencies"])


# ---------------------------------------------------------------------------------------------- the CLI


def test_placecast_api_execs_uvicorn_on_the_app_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    import infra.cli
    from infra.settings import get_settings

    calls: list[list[str]] = []

    def execv(path: str, argv: list[str]) -> None:
        calls.append(argv)

    monkeypatch.setattr("infra.cli.os.execv", execv)
    result = CliRunner().invoke(infra.cli.app, ["api", "--workers", "3", "--graceful-shutdown-s", "7"])
    assert result.exit_code == 0, result.output
    (argv,) = calls
    assert argv[1:3] == ["-m", "uvicorn"]
    settings = get_settings()
    options = argv[3:]
    assert options[options.index("--factory") + 1] == "infra.app:create_app"
    assert options[options.index("--host") + 1] == settings.api_host
    assert options[options.index("--port") + 1] == str(settings.api_port)
    assert options[options.index("--workers") + 1] == "3"
    assert options[options.index("--timeout-graceful-shutdown") + 1] == "7"
    assert "--no-proxy-headers" in options  # forwarded headers are the app's to judge (trusted proxies only)
    uvicorn.main.make_context("uvicorn", list(options))  # uvicorn itself accepts every option given
    assert "--timeout-graceful-shutdown" not in infra.cli.api_argv(settings, 1)


def test_placecast_worker_runs_the_arq_worker_in_the_foreground(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import infra.cli
    import infra.worker

    ran: list[bool] = []
    monkeypatch.setattr(infra.worker, "main", lambda: ran.append(True))
    result = CliRunner().invoke(infra.cli.app, ["worker"])
    assert result.exit_code == 0, result.output
    assert ran == [True]
