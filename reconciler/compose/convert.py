"""A compose file's data → Hedgerow manifests, as plain data. Pure: the command reads the files
(`env_file`s come in through `read`) and writes what this returns.

Every service becomes a container of one Release; top-level volumes and networks become
Volumes and Networks named `APP-NAME` (names are unique per repository, and DNS labels). What
Hedgerow cannot carry is an error naming the service, the field and the line; what it carries
differently is a warning that says how.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from reconciler.compose.interpolate import read_env_file
from reconciler.manifests.problems import FieldPath

Locate = Callable[[FieldPath], int]  # the line of a path in the compose file
Read = Callable[[str], str]  # an env_file's text, by the path written in the compose file

PASSWORD_LIKE = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIALS?|_PASS)$|^PASS$",
    re.IGNORECASE,
)
DROPPED = {
    "container_name": "Hedgerow names containers per device (hedgerow-DEVICE-...); siblings "
    "still reach it by its service name",
    "expose": "expose only documents a port in Docker; containers on a network reach each "
    "other on every port",
}
NOT_CARRIED = {
    "build": "Hedgerow deploys images: build and push the image, then name it in `image`",
    "links": "use networks: services on one network reach each other by name",
    "external_links": "use networks: services on one network reach each other by name",
    "extends": "write the service out in full",
    "configs": "use a bind mount of a file that exists on the device",
    "deploy": "swarm's deploy section has no meaning on a single device",
    "profiles": "a Deployment chooses what runs where",
    "scale": "one container per service on each device",
}
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", re.IGNORECASE)
SIZE_UNITS = {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}


@dataclass(frozen=True, slots=True)
class Finding:
    line: int
    where: str  # services.web.links
    message: str

    def render(self, file: str) -> str:
        return f"{file}:{self.line}: {self.where}: {self.message}"


@dataclass
class Imported:
    """The manifests (kind, name, data), the Secrets to encrypt (name → key → value), and the
    findings."""

    manifests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[Finding] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Options:
    application: str
    version: str = "1.0.0"
    folder: str = "/"  # the compose file's folder, absolute: relative binds resolve against it
    home: str = "/root"
    device: str | None = None
    selector: tuple[str, str] | None = None
    secrets: bool = True  # password-like env values go to Secrets (False: kept, with a warning)
    environment: Mapping[str, str] = field(default_factory=dict)  # for `environment:` secrets


def dns_label(name: str) -> str:
    """A compose name as a DNS label: lower case, `_` and `.` as `-`."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return label[:63].rstrip("-") or "app"


def size(value: Any) -> int | str | None:
    """Compose's byte sizes (`64m`, `1g`, `512k`, a number of bytes) as a Hedgerow quantity."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = SIZE.fullmatch(str(value).strip())
    if match is None:
        return None
    number, unit = match.groups()
    suffix = SIZE_UNITS[unit.lower()]
    return int(number) if not suffix and number.isdigit() else f"{number}{suffix}"


def convert(compose: Mapping[str, Any], locate: Locate, read: Read, options: Options) -> Imported:
    return _Converter(compose, locate, read, options).run()


class _Converter:
    def __init__(
        self, compose: Mapping[str, Any], locate: Locate, read: Read, options: Options
    ) -> None:
        self.compose = compose
        self.locate = locate
        self.read = read
        self.options = options
        self.app = options.application
        self.out = Imported()
        self.volumes: dict[str, str] = {}  # compose name → Volume name
        self.networks: dict[str, str] = {}  # compose name → Network name
        self.default_network: str | None = None
        self.files: dict[str, str] = {}  # compose secret → its file's content

    # -- findings --------------------------------------------------------------------------

    def error(self, path: FieldPath, message: str) -> None:
        self.out.errors.append(Finding(self.locate(path), _dotted(path), message))

    def warn(self, path: FieldPath, message: str) -> None:
        self.out.warnings.append(Finding(self.locate(path), _dotted(path), message))

    # -- the file --------------------------------------------------------------------------

    def run(self) -> Imported:
        compose = self.compose
        if not isinstance(compose, Mapping) or not isinstance(compose.get("services"), Mapping):
            self.error((), "a compose file has a `services:` mapping")
            return self.out
        for key in compose:
            known = ("version", "name", "services", "volumes", "networks", "secrets")
            if key not in known and not str(key).startswith("x-"):
                self.error((key,), f"Hedgerow cannot carry the top-level `{key}`")
        for section, read in (
            ("volumes", self._volumes),
            ("networks", self._networks),
            ("secrets", self._secrets),
        ):
            if not isinstance(compose.get(section) or {}, Mapping):
                self.error((section,), f"`{section}` is a mapping of names")
                continue
            try:
                read()
            except _SHAPES as exc:
                self.error((section,), f"cannot read `{section}`: {_shape(exc)}")
        containers = [
            self._service(str(name), service) for name, service in compose["services"].items()
        ]
        # services on no network share compose's `default` one: its name resolves siblings
        joining = [c for c in containers if c.pop("_default_network", False)]
        if joining:
            self.default_network = f"{self.app}-default"
            for container in joining:
                container["networks"] = [*container.get("networks", []), self.default_network]
            self._add("Network", self.default_network, {})
        self._add("Application", self.app, {"description": "imported from a compose file"})
        release = {
            "application": self.app,
            "version": self.options.version,
            "containers": containers,
        }
        self._add("Release", f"{self.app}-{dns_label(self.options.version)}", release)
        self._deployment()
        return self.out

    def _add(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        self.out.manifests.append((kind, name, spec))

    def _volumes(self) -> None:
        for name, spec in (self.compose.get("volumes") or {}).items():
            path: FieldPath = ("volumes", name)
            spec = spec or {}
            if spec.get("external"):
                self.error(path, "an external volume: Hedgerow creates the volumes it uses; "
                           "declare it here without external")  # fmt: skip
                continue
            volume = f"{self.app}-{dns_label(str(name))}"
            self.volumes[str(name)] = volume
            made = _driver(spec)
            self._unknown(path, spec, {"driver", "driver_opts", "labels", "name"})
            self._add("Volume", volume, made)

    def _networks(self) -> None:
        for name, spec in (self.compose.get("networks") or {}).items():
            path: FieldPath = ("networks", name)
            spec = spec or {}
            if spec.get("external"):
                self.error(path, "an external network: declare it here without external")
                continue
            network = f"{self.app}-{dns_label(str(name))}"
            self.networks[str(name)] = network
            made = _driver(spec)
            for flag, key in (("enable_ipv6", "enableIpv6"), ("internal", "internal")):
                if spec.get(flag):
                    made[key] = True
            pools = []
            for pool in (spec.get("ipam") or {}).get("config") or []:
                entry = {"subnet": str(pool.get("subnet", ""))}
                if pool.get("gateway"):
                    entry["gateway"] = str(pool["gateway"])
                if pool.get("ip_range"):
                    entry["ipRange"] = str(pool["ip_range"])
                pools.append(entry)
            if pools:
                made["ipam"] = pools
            allowed = {"driver", "driver_opts", "enable_ipv6", "internal", "ipam", "labels", "name"}
            self._unknown(path, spec, allowed)
            self._add("Network", network, made)

    @property
    def secret_name(self) -> str:
        """The Secret holding the application's compose secrets, one key each."""
        return f"{self.app}-secrets"

    def _secrets(self) -> None:
        """Top-level compose secrets (`file:`, or `environment:` naming a variable) become the
        keys of one Secret; never written in plain text: without a way to encrypt, an error."""
        for name, spec in (self.compose.get("secrets") or {}).items():
            path: FieldPath = ("secrets", name)
            spec = spec or {}
            if not self.options.secrets:
                self.error(path, "a compose secret needs --age or a .sops.yaml rule for the "
                           "output: Hedgerow never writes a secret in plain text")  # fmt: skip
                continue
            if "file" in spec:
                try:
                    value = self.read(str(spec["file"]))
                except OSError as exc:
                    self.error((*path, "file"), f"cannot read {spec['file']}: "
                               f"{exc.strerror or exc}")  # fmt: skip
                    continue
            elif "environment" in spec:
                value = self.options.environment.get(str(spec["environment"]), "")
            else:
                self.error(path, "Hedgerow takes a compose secret from `file:` or "
                           "`environment:`")  # fmt: skip
                continue
            self._unknown(path, spec, {"file", "environment", "name"})
            self.files[str(name)] = value
            self.out.secrets.setdefault(self.secret_name, {})[_key(str(name))] = value

    def _unknown(self, path: FieldPath, spec: Mapping[str, Any], allowed: set[str]) -> None:
        for key in spec:
            if key not in allowed and not str(key).startswith("x-"):
                self.error((*path, key), f"Hedgerow cannot carry `{key}` here")

    def _deployment(self) -> None:
        options = self.options
        if options.device is None and options.selector is None:
            return
        spec: dict[str, Any] = {"application": self.app, "release": options.version}
        if options.device is not None:
            spec["device"] = options.device
        else:
            assert options.selector is not None
            key, value = options.selector
            spec["selector"] = {"matchLabels": {key: value}}
        spec["state"] = "Running"
        self._add("Deployment", self.app, spec)

    # -- one service -----------------------------------------------------------------------

    def _service(self, name: str, service: Any) -> dict[str, Any]:
        at: FieldPath = ("services", name)
        container: dict[str, Any] = {"name": dns_label(name)}
        if not isinstance(service, Mapping):
            self.error(at, "a service is a mapping")
            return container
        if "image" not in service:
            self.error(at, "no image: Hedgerow deploys images" + (
                " (this service has only build:)" if "build" in service else ""))  # fmt: skip
        for key, value in service.items():
            key = str(key)
            path = (*at, key)
            if key.startswith("x-"):
                continue
            if key in DROPPED:
                self.warn(path, f"dropped: {DROPPED[key]}")
            elif key in NOT_CARRIED:
                self.error(path, f"Hedgerow cannot carry `{key}`: {NOT_CARRIED[key]}")
            elif key in SIMPLE:
                container[SIMPLE[key]] = value
            elif key in _FIELDS:
                try:
                    _FIELDS[key](self, path, value, container)
                except _SHAPES as exc:  # a value not in any form compose writes
                    self.error(path, f"cannot read `{key}`: {_shape(exc)}")
            else:
                self.error(path, f"Hedgerow cannot carry `{key}`")
        container.setdefault("restartPolicy", "no")  # compose's default; Hedgerow's differs
        mode = container.get("networkMode")
        if "networks" not in container and mode in (None, "bridge", "default"):
            container["_default_network"] = True
        self._secret_env(at, name, container)
        return container

    def _secret_env(self, at: FieldPath, service: str, container: dict[str, Any]) -> None:
        env: dict[str, Any] = container.get("env") or {}
        for key, value in env.items():
            if not PASSWORD_LIKE.search(key) or not isinstance(value, str) or not value:
                continue
            where = (*at, "environment")
            if not self.options.secrets:
                self.warn(where, f"{key} looks like a password: its value is now in git in plain "
                          "text; move it to a Secret (hedgerow secret create)")  # fmt: skip
                continue
            secret = f"{self.app}-{dns_label(service)}"
            self.out.secrets.setdefault(secret, {})[key] = value
            env[key] = {"secretKeyRef": {"secret": secret, "key": key}}
            self.warn(where, f"{key} moved to Secret {secret!r}: its value was in the compose "
                      "file (and maybe in its history): change it")  # fmt: skip


# compose key → Hedgerow key, taken as they are (Hedgerow checks them at validate)
SIMPLE = {
    "image": "image",
    "command": "command",
    "entrypoint": "entrypoint",
    "hostname": "hostname",
    "user": "user",
    "working_dir": "workingDir",
    "privileged": "privileged",
    "cap_add": "capAdd",
    "cap_drop": "capDrop",
    "security_opt": "securityOpt",
    "init": "init",
    "stop_signal": "stopSignal",
    "stop_grace_period": "stopGracePeriod",
    "tty": "tty",
    "dns_search": "dnsSearch",
    "pid": "pidMode",
    "ipc": "ipcMode",
    "read_only": "readOnlyRootfs",
    "mem_swappiness": "memorySwappiness",
    "storage_opt": "storageOpt",
    "volume_driver": "volumeDriver",
}


def _driver(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A top-level volume's or network's `driver` and `driver_opts`, as Hedgerow writes them."""
    made: dict[str, Any] = {}
    if spec.get("driver"):
        made["driver"] = str(spec["driver"])
    if spec.get("driver_opts"):
        made["options"] = {str(k): str(v) for k, v in spec["driver_opts"].items()}
    return made


def _pairs(value: Any, separator: str = "=") -> dict[str, Any]:
    """A compose mapping written as a mapping or as a list of `KEY=VALUE` (a key alone: None)."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    found: dict[str, Any] = {}
    for item in value or []:
        key, sep, rest = str(item).partition(separator)
        found[key.strip()] = rest if sep else None
    return found


def _words(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value or [])


def _key(name: str) -> str:
    """A compose secret's name as a Secret's key (letters, digits, '-', '_', '.')."""
    return re.sub(r"[^-._a-zA-Z0-9]", "-", name)


def _service_secrets(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    """Each secret as a read-only file, at /run/secrets/NAME (or its target), mode 0444 as
    compose gives it (root-owned: uid and gid are not carried)."""
    for i, entry in enumerate(value or []):
        spec = entry if isinstance(entry, Mapping) else {"source": entry}
        source = str(spec.get("source", ""))
        if source not in c.files:
            if c.options.secrets:
                c.error((*path, i), f"secret {source!r} is not declared under top-level secrets:")
            continue
        target = str(spec.get("target") or source)
        if not target.startswith("/"):
            target = f"/run/secrets/{target}"
        mode = spec.get("mode", 0o444)
        if spec.get("uid") is not None or spec.get("gid") is not None:
            c.warn((*path, i), "uid and gid are not carried: the file is root's, mode "
                   f"{int(mode):o}")  # fmt: skip
        out.setdefault("secrets", []).append(
            {"secret": c.secret_name, "key": _key(source), "target": target, "mode": int(mode)}
        )


def _environment(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    env = out.setdefault("env", {})
    for key, given in _pairs(value).items():
        if given is None:
            c.warn(path, f"{key} has no value here (compose takes it from the shell): left out")
            continue
        env[key] = given if isinstance(given, str) else _scalar(given)


def _env_file(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    env = out.setdefault("env", {})
    for entry in _words(value):
        file = entry.get("path") if isinstance(entry, Mapping) else entry
        try:
            text = c.read(str(file))
        except OSError as exc:
            c.error(path, f"cannot read env_file {file}: {exc.strerror or exc}")
            continue
        for key, given in read_env_file(text).items():
            env.setdefault(key, given)  # `environment` wins, as in compose


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _restart(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    policy, _, retries = str(value).partition(":")
    if policy not in ("no", "always", "unless-stopped", "on-failure"):
        c.error(path, f"restart {value!r} is not no, always, unless-stopped or on-failure[:N]")
        return
    out["restartPolicy"] = policy
    if retries:
        out["maxRetries"] = int(retries) if retries.isdigit() else retries


def _ports(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    bindings = out.setdefault("portBindings", [])
    for i, port in enumerate(value or []):
        if isinstance(port, Mapping):
            target = port.get("target")
            text = str(target)
            if port.get("published") is not None:
                text = f"{port['published']}:{text}"
            if port.get("host_ip"):
                text = f"{port['host_ip']}:{text}"
            if port.get("protocol"):
                text += f"/{port['protocol']}"
            bindings.append(text)
        else:
            text = str(port)
            if ":" not in text.split("/")[0]:
                c.warn((*path, i), f"{text}: a port without a host port is published on a "
                       "random one; Hedgerow publishes it the same way")  # fmt: skip
            bindings.append(text)


def _volume_entries(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    for i, entry in enumerate(value or []):
        at = (*path, i)
        if isinstance(entry, Mapping):
            kind = entry.get("type", "volume")
            source, target = entry.get("source"), str(entry.get("target", ""))
            read_only = bool(entry.get("read_only"))
            if kind == "tmpfs":
                size_ = (entry.get("tmpfs") or {}).get("size")
                options = f"size={size_}" if size_ else ""
                out.setdefault("tmpfs", []).append({"path": target, "options": options})
                continue
            if kind not in ("volume", "bind"):
                c.error(at, f"a {kind} mount: Hedgerow mounts volumes, binds and tmpfs")
                continue
            options = "ro" if read_only else ""
        else:
            parts = str(entry).split(":")
            source = parts[0] if len(parts) > 1 else None
            target = parts[1] if len(parts) > 1 else parts[0]
            options = parts[2] if len(parts) > 2 else ""
            kind = "bind" if source and (source[0] in "./~") else "volume"
            read_only = "ro" in options.split(",")
        if not source:
            c.error(at, f"an anonymous volume at {target}: name it under top-level volumes:")
            continue
        if kind == "volume":
            name = c.volumes.get(str(source))
            if name is None:
                c.error(at, f"volume {source!r} is not declared under top-level volumes:")
                continue
            mount: dict[str, Any] = {"volume": name, "target": target}
            if read_only:
                mount["readOnly"] = True
            out.setdefault("volumes", []).append(mount)
            continue
        host = str(source)
        if host.startswith("~"):
            host = c.options.home + host[1:]
            c.warn(at, f"{source} is {host} on the device: it must exist there")
        elif not host.startswith("/"):
            host = str(PurePosixPath(c.options.folder) / host)
            host = _normalise(host)
            c.warn(at, f"{source} is {host} on the device: it must exist there")
        bind = f"{host}:{target}" + (f":{options}" if options else "")
        out.setdefault("binds", []).append(bind)


def _normalise(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def _tmpfs(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    for entry in _words(value):
        target, _, options = str(entry).partition(":")
        out.setdefault("tmpfs", []).append({"path": target, "options": options})


def _networks(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    entries: list[Any] = []
    items = value.items() if isinstance(value, Mapping) else ((n, None) for n in value or [])
    for name, spec in items:
        network = c.networks.get(str(name))
        if network is None:
            if str(name) == "default":
                out["_default_network"] = True
                continue
            c.error((*path, name), f"network {name!r} is not declared under top-level networks:")
            continue
        spec = spec or {}
        attachment: dict[str, Any] = {"network": network}
        for key, to in (("ipv4_address", "ipv4Address"), ("ipv6_address", "ipv6Address")):
            if spec.get(key):
                attachment[to] = str(spec[key])
        if spec.get("aliases"):
            attachment["aliases"] = [dns_label(str(a)) for a in spec["aliases"]]
        entries.append(attachment if len(attachment) > 1 else network)
    if entries:
        out["networks"] = entries


def _network_mode(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    mode = str(value)
    if mode.startswith("service:"):
        mode = "container:" + dns_label(mode.removeprefix("service:"))
    out["networkMode"] = mode


CONDITIONS = {
    "service_started": "started",
    "service_healthy": "healthy",
    "service_completed_successfully": "completedSuccessfully",
}


def _depends_on(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    if not isinstance(value, Mapping):
        out["dependsOn"] = [dns_label(str(n)) for n in value or []]
        return
    found: dict[str, Any] = {}
    for name, spec in value.items():
        condition = (spec or {}).get("condition", "service_started")
        if condition not in CONDITIONS:
            c.error((*path, name, "condition"), f"condition {condition!r} is not one of "
                    f"{', '.join(CONDITIONS)}")  # fmt: skip
            continue
        found[dns_label(str(name))] = {"condition": CONDITIONS[condition]}
    if all(d["condition"] == "started" for d in found.values()):
        out["dependsOn"] = list(found)
    else:
        out["dependsOn"] = found


def _healthcheck(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    if not isinstance(value, Mapping):
        c.error(path, "a healthcheck is a mapping")
        return
    if value.get("disable"):
        out["healthcheck"] = {"test": ["NONE"]}
        return
    test = value.get("test")
    check: dict[str, Any] = {}
    if isinstance(test, str):
        check["test"] = ["CMD-SHELL", test]
    elif test is not None:
        check["test"] = [str(t) for t in test]
    else:
        c.error(path, "a healthcheck without a test: Hedgerow needs one (or disable: true)")
        return
    for key, to in (("interval", "interval"), ("timeout", "timeout"),
                    ("start_period", "startPeriod"), ("retries", "retries")):  # fmt: skip
        if value.get(key) is not None:
            check[to] = value[key]
    out["healthcheck"] = check


def _devices(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    for entry in value or []:
        parts = str(entry).split(":")
        host = parts[0]
        inside = parts[1] if len(parts) > 1 else host
        mapping = {"pathOnHost": host, "pathInContainer": inside}
        if len(parts) > 2:
            mapping["cgroupPermissions"] = parts[2]
        out.setdefault("deviceMappings", []).append(mapping)


def _extra_hosts(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    hosts = _pairs(value, ":") if not isinstance(value, Mapping) else _pairs(value)
    out["extraHosts"] = [f"{host}:{ip}" for host, ip in hosts.items()]


def _sysctls(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    out["sysctls"] = {k: _scalar(v) for k, v in _pairs(value).items()}


def _labels(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    out["labels"] = {k: _scalar(v) for k, v in _pairs(value).items()}


def _dns(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    out["dns"] = [str(v) for v in _words(value)]


def _sized(to: str) -> Callable[[_Converter, FieldPath, Any, dict[str, Any]], None]:
    def convert_size(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
        found = size(value)
        if found is None:
            c.error(path, f"{value!r} is not a size such as 64m or 1g")
        else:
            out[to] = found

    return convert_size


def _cpu(field_: str) -> Callable[[_Converter, FieldPath, Any, dict[str, Any]], None]:
    def convert_cpu(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
        out.setdefault("cpu", {})[field_] = int(value)

    return convert_cpu


def _ulimits(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    out["ulimits"] = dict(value or {})


def _group_add(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    out["groupAdd"] = [str(g) for g in value or []]


def _logging(c: _Converter, path: FieldPath, value: Any, out: dict[str, Any]) -> None:
    value = value or {}
    logging: dict[str, Any] = {"driver": str(value.get("driver", "json-file"))}
    if value.get("options"):
        logging["options"] = {str(k): _scalar(v) for k, v in value["options"].items()}
    out["logging"] = logging


_FIELDS: dict[str, Callable[[_Converter, FieldPath, Any, dict[str, Any]], None]] = {
    "environment": _environment,
    "secrets": _service_secrets,
    "env_file": _env_file,
    "restart": _restart,
    "ports": _ports,
    "volumes": _volume_entries,
    "tmpfs": _tmpfs,
    "networks": _networks,
    "network_mode": _network_mode,
    "depends_on": _depends_on,
    "healthcheck": _healthcheck,
    "devices": _devices,
    "extra_hosts": _extra_hosts,
    "sysctls": _sysctls,
    "labels": _labels,
    "dns": _dns,
    "shm_size": _sized("shmSize"),
    "mem_limit": _sized("memory"),
    "mem_reservation": _sized("memoryReservation"),
    "memswap_limit": _sized("memorySwap"),
    "cpu_period": _cpu("period"),
    "cpu_quota": _cpu("quota"),
    "ulimits": _ulimits,
    "group_add": _group_add,
    "logging": _logging,
}


# what reading a value of the wrong shape raises (a number where compose takes a list, ...)
_SHAPES = (TypeError, ValueError, AttributeError, KeyError, IndexError)


def _shape(error: Exception) -> str:
    """Why a value could not be read, in the user's words rather than Python's."""
    return "it is not written in any form compose takes for it"


def _dotted(path: FieldPath) -> str:
    return ".".join(str(p) for p in path) or "(file)"


def manifests_of(imported: Imported) -> Iterator[dict[str, Any]]:
    """Each manifest as a document (apiVersion, kind, metadata, spec)."""
    for kind, name, spec in imported.manifests:
        document: dict[str, Any] = {
            "apiVersion": "hedgerow.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name},
        }
        if spec or kind not in ("Volume", "Network", "Application"):
            document["spec"] = spec
        yield document
