"""Each semantic check names FILE:LINE:COL, the key path and, where one applies, the spec rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import errors, load_text

CASES = [
    ("undefined network", """
services:
  web:
    networks: [front, nope]
networks:
  front: {}
""", "compose.yaml:3:23: services.web.networks.nope: network 'nope' is not defined [CS-SNET-03]"),
    ("static address outside subnet", """
services:
  web:
    networks:
      n: {ipv4_address: 10.9.0.5}
networks:
  n: {ipam: {config: [{subnet: 10.1.0.0/24}]}}
""", "compose.yaml:4:25: services.web.networks.n.ipv4_address: static address 10.9.0.5 is outside the subnet"),
    ("static address without subnet", """
services:
  web:
    networks:
      n: {ipv4_address: 10.9.0.5}
networks:
  n: {}
""", "compose.yaml:4:25: services.web.networks.n.ipv4_address: static address 10.9.0.5 needs an IPv4 subnet"),
    ("static address is the gateway", """
services:
  web:
    networks:
      n:
        ipv4_address: 10.1.0.1
networks:
  n: {ipam: {config: [{subnet: 10.1.0.0/24, gateway: 10.1.0.1}]}}
""", "compose.yaml:5:23: services.web.networks.n.ipv4_address: static address 10.1.0.1 is the gateway"),
    ("duplicate static address", """
services:
  a:
    networks: {n: {ipv4_address: 10.1.0.5}}
  b:
    networks: {n: {ipv4_address: 10.1.0.5}}
networks:
  n: {ipam: {config: [{subnet: 10.1.0.0/24}]}}
""", "compose.yaml:5:34: services.b.networks.n.ipv4_address: static address 10.1.0.5 is also given to service 'a'"),
    ("overlapping subnets", """
services: {}
networks:
  a: {ipam: {config: [{subnet: 10.1.0.0/16}]}}
  b:
    ipam:
      config:
        - subnet: 10.1.2.0/24
""", "compose.yaml:7:19: networks.b.ipam.config[0].subnet: subnet 10.1.2.0/24 overlaps 10.1.0.0/16"),
    ("invalid CIDR", """
services: {}
networks:
  a:
    ipam:
      config:
        - subnet: 10.1.0.1/24
""", "compose.yaml:6:19: networks.a.ipam.config[0].subnet: invalid subnet '10.1.0.1/24': host bits are set"),
    ("gateway outside subnet", """
services: {}
networks:
  a:
    ipam:
      config:
        - subnet: 10.1.0.0/24
          gateway: 10.2.0.1
""", "compose.yaml:7:20: networks.a.ipam.config[0].gateway: gateway 10.2.0.1 is outside the subnet 10.1.0.0/24"),
    ("ip_range outside subnet", """
services: {}
networks:
  a:
    ipam:
      config:
        - subnet: 10.1.0.0/24
          ip_range: 10.1.1.0/25
""", "compose.yaml:7:21: networks.a.ipam.config[0].ip_range: ip_range 10.1.1.0/25 is outside the subnet"),
    ("port out of range", """
services:
  web:
    ports: ["80:65536"]
""", "compose.yaml:3:13: services.web.ports[0]: container port 65536 is out of range"),
    ("mismatched ranges", """
services:
  web:
    ports:
      - "8000-8002:80-81"
""", "compose.yaml:4:9: services.web.ports[0]: host range 8000-8002 and container range 80-81 have different lengths"),
    ("unknown protocol", """
services:
  web:
    ports: ["53:53/icmp"]
""", "compose.yaml:3:13: services.web.ports[0]: unknown protocol 'icmp' [CS-PORT-03]"),
    ("same host port twice", """
services:
  a:
    ports: ["8080:80"]
  b:
    ports: ["127.0.0.1:8080:81"]
""", "compose.yaml:5:13: services.b.ports[0]: host port 127.0.0.1:8080/tcp is already published by services.a.ports[0]"),
    ("network_mode with networks", """
services:
  web:
    network_mode: host
    networks: [default]
""", "compose.yaml:4:5: services.web.networks: networks cannot be combined with network_mode host [CS-NM-06]"),
    ("service:X unknown", """
services:
  side:
    network_mode: service:nope
""", "compose.yaml:3:19: services.side.network_mode: network_mode service 'nope' is not defined [CS-NM-08]"),
    ("service:X cycle", """
services:
  a:
    network_mode: service:b
  b:
    network_mode: service:a
""", "compose.yaml:3:19: services.a.network_mode: dependency cycle: a -> b -> a"),
    ("link to unknown service", """
services:
  web:
    links: [db:database]
""", "compose.yaml:3:13: services.web.links[0]: linked service 'db' is not defined"),
    ("duplicate container_name", """
services:
  a: {container_name: box}
  b: {container_name: box}
""", "compose.yaml:3:23: services.b.container_name: container_name 'box' is already used by service 'a'"),
    ("container_name with replicas", """
services:
  a:
    container_name: box
    scale: 2
""", "compose.yaml:3:21: services.a.container_name: a service with container_name cannot have 2 replicas"),
    ("service name not a DNS name", """
services:
  -bad-: {}
""", "compose.yaml:2:3: services.-bad-: service name '-bad-' is not a valid DNS name"),
    ("alias not a DNS name", """
services:
  web:
    networks:
      default:
        aliases: [ok, "no way"]
""", "compose.yaml:5:18: services.web.networks.default.aliases: alias 'no way' is not a valid DNS name"),
    ("hostname not RFC 1123", """
services:
  web: {hostname: under_score}
""", "compose.yaml:2:19: services.web.hostname: hostname 'under_score' is not a valid RFC 1123 host name"),
    ("external network with attributes", """
services: {}
networks:
  ext:
    external: true
    driver: bridge
""", "compose.yaml:5:5: networks.ext.driver: driver is not allowed on an external network: only `name` is [CS-NET-13]"),
    ("ports with network_mode host", """
services:
  web:
    network_mode: host
    ports: ["80:80"]
""", "compose.yaml:4:5: services.web.ports: ports cannot be published with network_mode host [CS-NM-07]"),
    ("scale and replicas disagree", """
services:
  web:
    scale: 2
    deploy: {replicas: 3}
""", "compose.yaml:3:12: services.web.scale: scale 2 and deploy.replicas 3 disagree [CS-REP-01]"),
    ("schema: wrong type", """
services:
  web:
    ports: "80:80"
""", "compose.yaml:3:12: services.web.ports: must be a list, not a string"),
    ("schema: unknown attachment key", """
services:
  web:
    networks:
      default: {alias: [x]}
""", "compose.yaml:4:17: services.web.networks.default.alias: unknown key 'alias'"),
    ("required variable", """
services:
  web:
    image: "${TAG:?set TAG}"
""", "compose.yaml:3:12: services.web.image: invalid interpolation in '${TAG:?set TAG}': required variable TAG is missing a value: set TAG"),
]


@pytest.mark.parametrize("name,text,want", CASES, ids=[c[0] for c in CASES])
def test_semantic_error(tmp_path: Path, name: str, text: str, want: str):
    got = errors(tmp_path, text)
    assert want in got, got


def test_all_problems_in_one_run(tmp_path: Path):
    got = errors(tmp_path, """
        services:
          a:
            networks: [nope]
            ports: ["99999"]
          b:
            links: [ghost]
    """)
    assert got.count("\n") == 2, got
    assert "services.a.networks.nope" in got and "services.a.ports[0]" in got and "services.b.links[0]" in got


def test_internal_only_ports_warn_and_stay_in_model(tmp_path: Path):
    p = load_text(tmp_path, """
        services:
          db:
            networks: [back]
            ports: ["5432:5432"]
        networks:
          back: {internal: true}
    """)
    assert [w for w in p.warnings if "compose.yaml:4:5: services.db.ports: the service is only on internal" in w]
    assert p.service("db").ports[0].target == 5432


def test_profiles_disabled_reference_is_an_error(tmp_path: Path):
    text = """
        services:
          web:
            links: [debug]
          debug:
            profiles: [dev]
    """
    assert "linked service 'debug' is disabled by its profiles [CS-PROF-04]" in errors(tmp_path, text)
    p = load_text(tmp_path, text, profiles=("dev",))
    assert [s.name for s in p.services] == ["debug", "web"]
    p = load_text(tmp_path, text, env={"COMPOSE_PROFILES": "x,dev"})
    assert [s.name for s in p.services] == ["debug", "web"]


def test_driver_opts_values_are_checked_where_written(tmp_path: Path):
    text = """
        services:
          web:
            ports: ["80"]
        networks:
          default:
            driver_opts:
              com.docker.network.bridge.host_binding_ipv4: localhost
              com.docker.network.driver.mtu: "9x"
              com.docker.network.bridge.enable_icc: maybe
              com.docker.network.bridge.name: a-name-longer-than-15
    """
    out = errors(tmp_path, text)
    assert 'compose.yaml:7:52: networks.default.driver_opts["com.docker.network.bridge.host_binding_ipv4"]: ' \
           "'localhost' is not an IP address" in out
    assert "compose.yaml:8:38: " in out and "MTU '9x' is not a number from 68 to 65535" in out
    assert "compose.yaml:9:45: " in out and "'maybe' is not a boolean" in out
    assert "compose.yaml:10:39: " in out and "'a-name-longer-than-15' is not a valid interface name" in out
    p = load_text(tmp_path, text.replace("localhost", "127.0.0.1").replace('"9x"', "1400")
                  .replace("maybe", "'false'").replace("a-name-longer-than-15", "br-web"))
    assert p.network("default").opt("com.docker.network.driver.mtu") == "1400"


def _plan_warnings(p) -> list[str]:
    from composenet.core.desired import Upstreams
    from composenet.core.state import ObservedState
    from composenet.pipeline import make_plan

    return make_plan(p, p.name, ObservedState(offline=True), Upstreams(("192.0.2.53",))).plan.warnings


def test_port_warnings_are_said_once_and_located(tmp_path: Path):
    p = load_text(tmp_path, """
        services:
          db:
            networks: [back]
            ports: ["5432:5432"]
          off:
            network_mode: none
            ports: ["81"]
        networks:
          back: {internal: true}
    """)
    ws = _plan_warnings(p)
    assert len([w for w in ws if "services.db.ports" in w or "service db" in w]) == 1, ws
    assert len([w for w in ws if "services.off.ports" in w or "service off" in w]) == 1, ws
    assert all(w.startswith(str(tmp_path)) for w in ws), ws


def test_schema_and_semantic_problems_in_one_run(tmp_path: Path):
    """Issue 2: a schema error in one service does not hide the semantic errors of the others."""
    got = errors(tmp_path, """
        services:
          c:
            depends_on: [ghost]
          a:
            networks:
              front: {priority: hi}
          b:
            networks: [nope]
        networks:
          front: {}
    """)
    lines = got.replace(f"{tmp_path}/", "").splitlines()
    assert lines == [
        "compose.yaml:3:17: services.c.depends_on: depends_on service 'ghost' is not defined [CS-PROF-04]",
        "compose.yaml:6:25: services.a.networks.front.priority: must be a number, not a string",
        "compose.yaml:8:16: services.b.networks.nope: network 'nope' is not defined [CS-SNET-03] (hint: declare "
        "it under the top-level `networks:` (default, front are))",
    ], got


def test_a_schema_error_keeps_its_name_known(tmp_path: Path):
    """A service or network with a schema error is not modelled, but references to it are not
    reported as undefined; a service extending a broken one is not checked either."""
    got = errors(tmp_path, """
        services:
          web:
            ports: 5
          child:
            extends: web
            ports: ["70000:80"]
          api:
            depends_on: [web]
            links: [web]
            networks: [back, gone]
        networks:
          back:
            driver_opts: 7
    """)
    lines = got.replace(f"{tmp_path}/", "").splitlines()
    assert [ln.split(": ", 2)[:2] for ln in lines] == [
        ["compose.yaml:3:12", "services.web.ports"],
        ["compose.yaml:10:22", "services.api.networks.gone"],
        ["compose.yaml:13:18", "networks.back.driver_opts"],
    ], got
    assert "network 'gone' is not defined" in lines[1]


@pytest.mark.parametrize("text,want", [
    ("services: [web]\nnetworks: {n: {driver_opts: {mtu: x}}}\n", ["compose.yaml:1:11: services: must be a mapping"]),
    ("services:\n  web:\n    networks: [nope]\nnetworks: [a]\n", ["compose.yaml:4:11: networks: must be a mapping"]),
    ("services:\n  web:\n    networks: [nope]\nversion: [1]\nname: {x: 1}\n",
     ["compose.yaml:3:16: services.web.networks.nope: network 'nope' is not defined",
      "compose.yaml:4:10: version: must be a string", "compose.yaml:5:7: name: must be a string"]),
    ("services:\n  web:\n    ports: [80, 80]\n    networks: [nope]\n  web2:\n    ports: [80, '99999']\n",
     ["compose.yaml:3:12: services.web.ports: has duplicate entries", "compose.yaml:6:17: services.web2.ports[1]: container port 99999"]),
])
def test_schema_errors_set_aside_only_their_part(tmp_path: Path, text: str, want: list[str]):
    """A whole section of the wrong type stops the checks; elsewhere the rest is still checked.
    Each problem is said once, in file order."""
    lines = errors(tmp_path, text).replace(f"{tmp_path}/", "").splitlines()
    assert len(lines) == len(want), lines
    for line, w in zip(lines, want, strict=True):
        assert line.startswith(w), lines


# ---- names that become kernel or file names (compose/names.py), process keys ------------------

LONG = "p" * 60  # a valid project name whose container and network names are too long
NAME_CASES = [
    ("network key with a slash", {}, """
services:
  app:
    networks: ["a/b"]
networks:
  "a/b": {}
""", "compose.yaml:5:3: networks[\"a/b\"]: network key 'a/b' is invalid"),
    ("network name with a slash", {}, """
services: {}
networks:
  n: {name: "x/y"}
""", "compose.yaml:3:13: networks.n.name: network name 'x/y' is invalid"),
    ("network name too long", {}, """
services: {}
networks:
  n: {name: "%s"}
""" % ("n" * 64), "compose.yaml:3:13: networks.n.name: network name '" + "n" * 64 + "' is 64 characters long: at most 63"),
    ("project name makes the network name too long", {"COMPOSE_PROJECT_NAME": LONG}, """
services: {}
networks:
  back: {}
""", f"compose.yaml:3:3: networks.back: network name '{LONG}_back' (project '{LONG}' + '_' + key) is 65 characters "
     "long: at most 63"),
    ("project name makes the container name too long", {"COMPOSE_PROJECT_NAME": LONG}, """
services:
  web:
    network_mode: none
""", f"compose.yaml:2:3: services.web: container name '{LONG}-web-1' (project-service-index) is 66 characters long: "
     "at most 63"),
    ("container_name too long", {}, """
services:
  web: {container_name: "%s", network_mode: none}
""" % ("c" * 64), "compose.yaml:2:25: services.web.container_name: container_name '" + "c" * 64 + "' is 64 characters "
     "long: at most 63"),
    ("container_name that is not a DNS name", {}, """
services:
  web: {container_name: "a..b", network_mode: none}
""", "compose.yaml:2:25: services.web.container_name: container_name 'a..b' is not a valid DNS name"),
    ("container_name taken by a derived name", {"COMPOSE_PROJECT_NAME": "shop"}, """
services:
  a: {container_name: shop-b-2, network_mode: none}
  b: {scale: 2, network_mode: none}
""", "compose.yaml:2:23: services.a.container_name: container_name 'shop-b-2' is also the name of a container of "
     "service 'b'"),
    ("hostname too long for the kernel", {}, """
services:
  web: {hostname: "HOST", network_mode: none}
""".replace("HOST", ".".join(["h" * 20] * 4)), "compose.yaml:2:19: services.web.hostname: hostname is 83 bytes long: the kernel takes"
     " at most 64"),
    ("interface name with a colon", {}, """
services:
  web:
    networks:
      n: {interface_name: "eth:0"}
networks:
  n: {}
""", "compose.yaml:4:27: services.web.networks.n.interface_name: invalid interface name 'eth:0'"),
    ("restart policy", {}, """
services:
  web: {command: "true", restart: sometimes}
""", "compose.yaml:2:35: services.web.restart: invalid restart policy 'sometimes'"),
    ("unknown capability", {}, """
services:
  web: {command: "true", cap_add: [NET_ADMIN, CAP_FLY]}
""", "compose.yaml:2:35: services.web.cap_add: unknown capability 'CAP_FLY'"),
]


@pytest.mark.parametrize("name,env,text,want", NAME_CASES, ids=[c[0] for c in NAME_CASES])
def test_names_and_process_keys(tmp_path: Path, name: str, env: dict[str, str], text: str, want: str):
    got = errors(tmp_path, text, env=env)
    assert want in got, f"{name}:\n{got}"


def test_process_keys_are_interpreted(tmp_path: Path):
    from composenet.compose.render_config import render_config

    p = load_text(tmp_path, """
services:
  web:
    command: "true"
    restart: no
    cap_add: [net_admin, CAP_NET_ADMIN]
    cap_drop: [ALL]
    privileged: "true"
  job: {command: "true", restart: "on-failure:3"}
""")
    web, job = p.service("web"), p.service("job")
    assert (web.restart, web.cap_add, web.cap_drop, web.privileged) == ("no", ("NET_ADMIN",), ("ALL",), True)
    assert job.restart == "on-failure:3"
    assert not any(k.split(".")[-1] in ("restart", "cap_add", "cap_drop", "privileged") for k in p.ignored), p.ignored
    assert "cap_add:\n    - NET_ADMIN" in render_config(p, "yaml")


def test_empty_ipam_config_survives_config_and_reload(tmp_path: Path):
    """`ipam: {config: []}` says nothing: `config` prints no `ipam`, and the printed document
    loads back to the same document (tests/unit/test_props.py found it kept `ipam: {}`)."""
    from composenet.compose.render_config import render_config

    p = load_text(tmp_path, """
services: {}
networks:
  n: {ipam: {config: []}}
  m: {ipam: {driver: default, config: []}}
""")
    assert "ipam" not in p.document["networks"]["n"]
    assert p.document["networks"]["m"]["ipam"] == {"driver": "default"}
    again = load_text(tmp_path, render_config(p, "yaml"))
    assert again.document == p.document


def test_two_networks_may_not_share_a_name(tmp_path: Path):
    """Two networks the project creates with one name would be one bridge (found by hypothesis:
    keys '0' and '1', both `name: '0'`, crashed the planner with "two different resources")."""
    got = errors(tmp_path, """
        name: dup
        services:
          a: {networks: [x, y, z]}
        networks:
          x: {name: same}
          y: {name: same}
          z: {name: shared, external: true}
    """)
    assert "networks.y.name: network name 'same' is also the name of network 'x'" in got, got
    assert "networks.x" not in got.replace("network 'x'", ""), got
