"""alloy/config.alloy: would Alloy accept it, and does it send what we promise where we promise?

Alloy itself cannot be installed here, so this test carries its own parser for Alloy's
configuration syntax (a lark grammar: blocks with optional labels, attributes, and
expressions with function calls, lists, objects and component references) and checks the
things a user would otherwise find out only at ``alloy run`` time or, worse, later: a dangling
reference, a misspelled component or argument, a receiver open to the network, a secret in
the file, a signal that never reaches Grafana Cloud, an env file that does not match.

The grammar is a little more lenient than Alloy's (it does not insist on a newline between
two attributes) and meant to be no stricter, so a parse error here is a real one.

Every check is a function returning a list of problems, so the same check runs on the real
config (no problems) and on broken copies of it (``test_each_check_catches_its_breakage``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError

ALLOY_DIR = Path(__file__).resolve().parent.parent / "alloy"
CONFIG_PATH = ALLOY_DIR / "config.alloy"
ENV_EXAMPLE_PATH = ALLOY_DIR / "alloy.env.example"
README_PATH = ALLOY_DIR / "README.md"
COMPOSE_PATH = ALLOY_DIR / "compose.yaml"

# --------------------------------------------------------------------------------------
# Alloy's configuration syntax
# --------------------------------------------------------------------------------------

ALLOY_GRAMMAR = r"""
    start: _statement*

    _statement: attribute | block
    attribute: IDENT "=" expr
    block: block_name STRING? "{" _statement* "}"
    block_name: IDENT ("." IDENT)*

    ?expr: or_expr
    ?or_expr: and_expr | or_expr OR and_expr -> binary
    ?and_expr: cmp_expr | and_expr AND cmp_expr -> binary
    ?cmp_expr: add_expr | cmp_expr CMP add_expr -> binary
    ?add_expr: mul_expr | add_expr ADD mul_expr -> binary
    ?mul_expr: pow_expr | mul_expr MUL pow_expr -> binary
    ?pow_expr: unary | unary POW pow_expr -> binary
    ?unary: postfix | NOT unary -> unary | ADD unary -> unary
    ?postfix: primary
        | postfix "." IDENT -> access
        | postfix "[" expr "]" -> index
        | postfix "(" [expr ("," expr)* ","?] ")" -> call
    ?primary: STRING -> string
        | RAW_STRING -> raw_string
        | NUMBER -> number
        | TRUE -> true
        | FALSE -> false
        | NULL -> null
        | IDENT -> name
        | "[" [expr ("," expr)* ","?] "]" -> list
        | "{" [field ("," field)* ","?] "}" -> object
        | "(" expr ")"
    field: (IDENT | STRING) "=" expr

    TRUE: "true"
    FALSE: "false"
    NULL: "null"
    OR: "||"
    AND: "&&"
    CMP: "==" | "!=" | "<=" | ">=" | "<" | ">"
    ADD: "+" | "-"
    MUL: "*" | "/" | "%"
    POW: "^"
    NOT: "!"
    IDENT: /[A-Za-z_][A-Za-z0-9_]*/
    STRING: /"(\\.|[^"\\\n])*"/
    RAW_STRING: /`[^`]*`/
    NUMBER: /[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/

    LINE_COMMENT: /\/\/[^\n]*/
    BLOCK_COMMENT: /\/\*(.|\n)*?\*\//
    %import common.WS
    %ignore WS
    %ignore LINE_COMMENT
    %ignore BLOCK_COMMENT
"""


@dataclasses.dataclass(frozen=True)
class Lit:
    value: Any


@dataclasses.dataclass(frozen=True)
class Ref:
    """A dotted name such as ``otelcol.processor.batch.lab.input``."""

    path: str


@dataclasses.dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class ListExpr:
    items: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class ObjectExpr:
    fields: tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Op:
    op: str
    operands: tuple[Any, ...]


@dataclasses.dataclass
class Block:
    name: str
    label: str | None
    attributes: list[tuple[str, Any]]
    blocks: list[Block]
    line: int

    @property
    def component_id(self) -> str:
        return f"{self.name}.{self.label}" if self.label is not None else self.name

    def attr(self, name: str) -> Any:
        values = [value for key, value in self.attributes if key == name]
        return values[0] if values else None

    def child(self, name: str) -> Block | None:
        children = [b for b in self.blocks if b.name == name]
        return children[0] if children else None


def _unquote(token: str) -> str:
    # Alloy strings use Go's escapes; the config only needs the common ones.
    body = token[1:-1]
    return re.sub(
        r'\\(["\\nt])', lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body
    )


@v_args(inline=True)
class _ToModel(Transformer):  # type: ignore[type-arg]
    def start(self, *statements: Any) -> list[Any]:
        return list(statements)

    def attribute(self, name: Token, value: Any) -> tuple[str, Any, int]:
        return (str(name), value, name.line)

    def block_name(self, *parts: Token) -> Token:
        return Token("BLOCK_NAME", ".".join(str(p) for p in parts), line=parts[0].line)

    def block(self, name: Token, *rest: Any) -> Block:
        label = None
        if rest and isinstance(rest[0], Token) and rest[0].type == "STRING":
            label, rest = _unquote(str(rest[0])), rest[1:]
        attributes = [(a[0], a[1]) for a in rest if isinstance(a, tuple)]
        blocks = [b for b in rest if isinstance(b, Block)]
        return Block(str(name), label, attributes, blocks, name.line)

    def string(self, token: Token) -> Lit:
        return Lit(_unquote(str(token)))

    def raw_string(self, token: Token) -> Lit:
        return Lit(str(token)[1:-1])

    def number(self, token: Token) -> Lit:
        text = str(token)
        return Lit(float(text) if any(c in text for c in ".eE") else int(text))

    def true(self, _: Token) -> Lit:
        return Lit(True)

    def false(self, _: Token) -> Lit:
        return Lit(False)

    def null(self, _: Token) -> Lit:
        return Lit(None)

    def name(self, token: Token) -> Ref:
        return Ref(str(token))

    def access(self, target: Any, attr: Token) -> Any:
        if isinstance(target, Ref):
            return Ref(f"{target.path}.{attr}")
        return Op(".", (target, Lit(str(attr))))

    def index(self, target: Any, key: Any) -> Op:
        return Op("[]", (target, key))

    def call(self, target: Any, *args: Any) -> Any:
        real_args = tuple(a for a in args if a is not None)
        if isinstance(target, Ref):
            return Call(target.path, real_args)
        return Op("()", (target, *real_args))

    def list(self, *items: Any) -> ListExpr:
        return ListExpr(tuple(i for i in items if i is not None))

    def field(self, key: Token, value: Any) -> tuple[str, Any]:
        text = str(key)
        return (_unquote(text) if key.type == "STRING" else text, value)

    def object(self, *fields: Any) -> ObjectExpr:
        return ObjectExpr(tuple(f for f in fields if f is not None))

    def binary(self, left: Any, op: Token, right: Any) -> Op:
        return Op(str(op), (left, right))

    def unary(self, op: Token, operand: Any) -> Op:
        return Op(str(op), (operand,))


_PARSER = Lark(ALLOY_GRAMMAR, parser="lalr", maybe_placeholders=True)


@dataclasses.dataclass
class Config:
    blocks: list[Block]
    top_level_attributes: list[str]
    text: str

    @property
    def components(self) -> dict[str, Block]:
        return {b.component_id: b for b in self.blocks if b.label is not None}


def parse_alloy(text: str) -> Config:
    statements = _ToModel().transform(_PARSER.parse(text))
    return Config(
        blocks=[s for s in statements if isinstance(s, Block)],
        top_level_attributes=[s[0] for s in statements if isinstance(s, tuple)],
        text=text,
    )


def walk_blocks(
    blocks: list[Block], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Block]]:
    for block in blocks:
        here = (*path, block.component_id if not path else block.name)
        yield here, block
        yield from walk_blocks(block.blocks, here)


def walk_expr(expr: Any) -> Iterator[Any]:
    yield expr
    children: tuple[Any, ...] = ()
    if isinstance(expr, Call):
        children = expr.args
    elif isinstance(expr, ListExpr):
        children = expr.items
    elif isinstance(expr, ObjectExpr):
        children = tuple(v for _, v in expr.fields)
    elif isinstance(expr, Op):
        children = expr.operands
    for child in children:
        yield from walk_expr(child)


def all_attributes(config: Config) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    for path, block in walk_blocks(config.blocks):
        for name, value in block.attributes:
            yield path, name, value


def evaluate(expr: Any, env: Mapping[str, str]) -> Any:
    """Evaluate the subset of Alloy's expressions a config of ours may use, with ``env``."""
    if isinstance(expr, Lit):
        return expr.value
    if isinstance(expr, ListExpr):
        return [evaluate(i, env) for i in expr.items]
    if isinstance(expr, ObjectExpr):
        return {k: evaluate(v, env) for k, v in expr.fields}
    if isinstance(expr, Call) and expr.func == "sys.env":
        return env.get(evaluate(expr.args[0], env), "")
    if isinstance(expr, Call) and expr.func == "coalesce":
        values = [evaluate(a, env) for a in expr.args]
        return next((v for v in values if v not in (None, "", [], {})), values[-1])
    if isinstance(expr, Op) and expr.op == "+" and len(expr.operands) == 2:
        return evaluate(expr.operands[0], env) + evaluate(expr.operands[1], env)
    raise ValueError(f"cannot evaluate {expr!r} without Alloy")


def env_reads(config: Config) -> set[str]:
    names: set[str] = set()
    for _, _, value in all_attributes(config):
        for node in walk_expr(value):
            if isinstance(node, Call) and node.func in ("sys.env", "env"):
                assert len(node.args) == 1 and isinstance(node.args[0], Lit), node
                names.add(node.args[0].value)
    return names


# --------------------------------------------------------------------------------------
# What Alloy knows (from the Alloy reference docs, v1.13+)
# --------------------------------------------------------------------------------------

# Component types → the fields they export (what ``<type>.<label>.<field>`` may name).
KNOWN_COMPONENTS: dict[str, set[str]] = {
    "otelcol.receiver.otlp": set(),
    "otelcol.receiver.prometheus": {"receiver"},
    "otelcol.receiver.loki": {"receiver"},
    "otelcol.processor.batch": {"input"},
    "otelcol.processor.memory_limiter": {"input"},
    "otelcol.processor.attributes": {"input"},
    "otelcol.processor.resourcedetection": {"input"},
    "otelcol.processor.transform": {"input"},
    "otelcol.processor.filter": {"input"},
    "otelcol.processor.tail_sampling": {"input"},
    "otelcol.exporter.otlp": {"input"},
    "otelcol.exporter.otlphttp": {"input"},
    "otelcol.exporter.debug": {"input"},
    "otelcol.exporter.prometheus": {"input"},
    "otelcol.exporter.loki": {"input"},
    "otelcol.connector.spanmetrics": {"input"},
    "otelcol.connector.host_info": {"input"},
    "otelcol.auth.basic": {"handler"},
    "otelcol.auth.bearer": {"handler"},
    "otelcol.auth.headers": {"handler"},
    "prometheus.scrape": set(),
    "prometheus.remote_write": {"receiver"},
    "prometheus.relabel": {"receiver", "rules"},
    "prometheus.exporter.self": {"targets"},
    "prometheus.exporter.unix": {"targets"},
    "discovery.relabel": {"output", "rules"},
    "loki.write": {"receiver"},
    "loki.process": {"receiver"},
    "local.file": {"content"},
}

# Unlabelled top-level configuration blocks Alloy accepts.
CONFIG_BLOCKS = {"logging", "livedebugging", "tracing", "http", "remotecfg", "foreach"}


@dataclasses.dataclass(frozen=True)
class Spec:
    """Arguments and inner blocks Alloy accepts in a block (a subset of the reference)."""

    attributes: frozenset[str] = frozenset()
    blocks: Mapping[str, Spec] = dataclasses.field(default_factory=dict)
    required: frozenset[str] = frozenset()


def spec(
    attributes: str = "", blocks: Mapping[str, Spec] | None = None, required: str = ""
) -> Spec:
    return Spec(frozenset(attributes.split()), dict(blocks or {}), frozenset(required.split()))


_OUTPUT = spec("traces metrics logs")
_DEBUG = spec("disable_high_cardinality_metrics level")
_TLS_CLIENT = spec(
    "ca_file ca_pem cert_file cert_pem key_file key_pem insecure insecure_skip_verify "
    "server_name min_version max_version"
)
_TLS_SERVER = spec(
    "ca_file ca_pem cert_file cert_pem key_file key_pem client_ca_file min_version max_version"
)
_BASIC_AUTH = spec("username password password_file")

# Components whose arguments the test checks; a component used in the config must be here.
SCHEMAS: dict[str, Spec] = {
    "otelcol.receiver.otlp": spec(
        blocks={
            "grpc": spec(
                "endpoint transport max_recv_msg_size max_concurrent_streams read_buffer_size "
                "write_buffer_size include_metadata auth",
                {"tls": _TLS_SERVER, "keepalive": spec()},
            ),
            "http": spec(
                "endpoint max_request_body_size include_metadata traces_url_path "
                "metrics_url_path logs_url_path compression_algorithms auth",
                {"tls": _TLS_SERVER, "cors": spec("allowed_origins allowed_headers max_age")},
            ),
            "output": _OUTPUT,
            "debug_metrics": _DEBUG,
        },
        required="output",
    ),
    "otelcol.processor.batch": spec(
        "timeout send_batch_size send_batch_max_size metadata_keys metadata_cardinality_limit",
        {"output": _OUTPUT, "debug_metrics": _DEBUG},
        required="output",
    ),
    "otelcol.auth.basic": spec(
        "username password",  # deprecated top-level form, still accepted
        {
            "client_auth": spec("username password", required="username password"),
            "htpasswd": spec("file inline"),
            "debug_metrics": _DEBUG,
        },
    ),
    "otelcol.exporter.otlphttp": spec(
        "metrics_endpoint logs_endpoint traces_endpoint encoding",
        {
            "client": spec(
                "endpoint encoding read_buffer_size write_buffer_size timeout headers "
                "compression max_idle_conns max_idle_conns_per_host max_conns_per_host "
                "idle_conn_timeout disable_keep_alives http2_read_idle_timeout "
                "http2_ping_timeout auth",
                {"tls": _TLS_CLIENT, "cookies": spec("enabled")},
                required="endpoint",
            ),
            "sending_queue": spec("enabled num_consumers queue_size blocking sizer"),
            "retry_on_failure": spec(
                "enabled initial_interval randomization_factor multiplier max_interval "
                "max_elapsed_time"
            ),
            "debug_metrics": _DEBUG,
        },
        required="client",
    ),
    "prometheus.scrape": spec(
        "targets forward_to job_name metrics_path scrape_interval scrape_timeout scheme "
        "honor_labels honor_timestamps params bearer_token bearer_token_file "
        "enable_http2 follow_redirects extra_metrics sample_limit scrape_protocols",
        {
            "basic_auth": _BASIC_AUTH,
            "authorization": spec("type credentials credentials_file"),
            "tls_config": _TLS_CLIENT,
            "clustering": spec("enabled"),
        },
        required="targets forward_to",
    ),
    "prometheus.remote_write": spec(
        "external_labels",
        {
            "endpoint": spec(
                "url name remote_timeout headers http_headers send_exemplars "
                "send_native_histograms bearer_token bearer_token_file enable_http2 "
                "follow_redirects proxy_url no_proxy proxy_from_environment",
                {
                    "basic_auth": _BASIC_AUTH,
                    "authorization": spec("type credentials credentials_file"),
                    "tls_config": _TLS_CLIENT,
                    "queue_config": spec(
                        "capacity max_shards min_shards max_samples_per_send "
                        "batch_send_deadline min_backoff max_backoff retry_on_http_429 "
                        "sample_age_limit"
                    ),
                    "metadata_config": spec("send send_interval max_samples_per_send"),
                    "write_relabel_config": spec(
                        "source_labels separator regex modulus target_label replacement action"
                    ),
                },
                required="url",
            ),
            "wal": spec("truncate_frequency min_keepalive_time max_keepalive_time"),
        },
        required="endpoint",
    ),
}

# Attributes whose value is a credential or says where data (and credentials) go. They must
# be read from the environment, so the file can be shared and the secret can rotate.
CREDENTIAL_ATTRIBUTES = {
    "username",
    "password",
    "bearer_token",
    "headers",
    "http_headers",
    "credentials",
}
REMOTE_LOCATION_ATTRIBUTES = {
    "endpoint",
    "url",
    "traces_endpoint",
    "metrics_endpoint",
    "logs_endpoint",
}
REMOTE_COMPONENT_PREFIXES = ("otelcol.exporter.", "prometheus.remote_write", "loki.write")

SIGNALS = ("traces", "metrics", "logs")
TOKEN_LIKE = [
    re.compile(r"glc_[A-Za-z0-9+/=_-]{20,}"),  # Grafana Cloud access policy token
    re.compile(r"glsa_[A-Za-z0-9_]{20,}"),  # Grafana service account token
    re.compile(r"eyJ[A-Za-z0-9_-]{20,}"),  # a base64 JSON (JWT or Grafana's token payload)
    re.compile(r"[A-Za-z0-9+/]{40,}={0,2}"),  # any long base64 run
    re.compile(r"https?://[^/\s:@\"]+:[^/\s@\"]+@"),  # credentials inside a URL
]

# --------------------------------------------------------------------------------------
# Checks: each returns the problems it finds, worded for the person who edits the config
# --------------------------------------------------------------------------------------


def problems_component_types(config: Config) -> list[str]:
    problems = [
        f"top-level attribute {name!r}: Alloy only accepts blocks at the top level"
        for name in config.top_level_attributes
    ]
    seen: set[str] = set()
    for block in config.blocks:
        if block.label is None:
            if block.name not in CONFIG_BLOCKS:
                problems.append(
                    f"line {block.line}: {block.name!r} is not a configuration block "
                    "and has no label, so it is not a component either"
                )
            continue
        if block.name not in KNOWN_COMPONENTS:
            problems.append(f"line {block.line}: {block.name!r} is not an Alloy component type")
        if block.component_id in seen:
            problems.append(f"line {block.line}: {block.component_id} is defined twice")
        seen.add(block.component_id)
    return problems


def problems_references(config: Config) -> list[str]:
    components = config.components
    problems = []
    for path, name, value in all_attributes(config):
        for node in walk_expr(value):
            if not isinstance(node, Ref):
                continue
            owner = next((cid for cid in components if node.path.startswith(cid + ".")), None)
            where = f"{'.'.join(path)}.{name}"
            if owner is None:
                problems.append(f"{where} refers to {node.path}, which is not defined in this file")
                continue
            field = node.path[len(owner) + 1 :]
            exports = KNOWN_COMPONENTS.get(components[owner].name, set())
            if field not in exports:
                problems.append(
                    f"{where} refers to {node.path}, but {components[owner].name} "
                    f"exports only {sorted(exports) or 'nothing'}"
                )
    return problems


def _schema_problems(block: Block, schema: Spec, where: str) -> list[str]:
    problems = []
    names = [n for n, _ in block.attributes]
    for name in names:
        if name not in schema.attributes:
            problems.append(f"{where}: Alloy does not know the argument {name!r}")
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"{where}: argument {name!r} is set twice")
    for child in block.blocks:
        if child.name not in schema.blocks:
            problems.append(f"{where}: Alloy does not know the block {child.name!r}")
        else:
            problems += _schema_problems(
                child, schema.blocks[child.name], f"{where} > {child.name}"
            )
    present = set(names) | {b.name for b in block.blocks}
    for name in sorted(schema.required - present):
        problems.append(f"{where}: required {name!r} is missing")
    return problems


def problems_arguments(config: Config) -> list[str]:
    problems = []
    for cid, block in config.components.items():
        schema = SCHEMAS.get(block.name)
        if schema is None:
            problems.append(
                f"{cid}: the test knows no arguments for {block.name}; add them to SCHEMAS"
            )
            continue
        problems += _schema_problems(block, schema, cid)
    return problems


def _is_loopback(address: str) -> bool:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def problems_receiver_loopback(config: Config) -> list[str]:
    problems = []
    receivers = [b for b in config.components.values() if b.name == "otelcol.receiver.otlp"]
    if not receivers:
        problems.append("no otelcol.receiver.otlp: the lab has nothing to send OTLP to")
    for receiver in receivers:
        for protocol, port in (("grpc", "4317"), ("http", "4318")):
            server = receiver.child(protocol)
            if server is None:
                problems.append(
                    f"{receiver.component_id}: no {protocol} block, so no {protocol} server"
                )
                continue
            endpoint = server.attr("endpoint")
            if endpoint is None:
                # Alloy's own default has changed between versions: state it.
                problems.append(f"{receiver.component_id} > {protocol}: set endpoint explicitly")
                continue
            address = evaluate(endpoint, {})
            if not _is_loopback(address):
                problems.append(
                    f"{receiver.component_id} > {protocol} listens on {address} by "
                    "default; the default must be loopback"
                )
            elif not address.endswith(":" + port):
                problems.append(
                    f"{receiver.component_id} > {protocol} listens on {address}, "
                    f"not the standard port {port} the OTLP exporters default to"
                )
    return problems


def _is_env_read(expr: Any) -> bool:
    return (
        isinstance(expr, Call)
        and expr.func == "sys.env"
        and len(expr.args) == 1
        and isinstance(expr.args[0], Lit)
        and isinstance(expr.args[0].value, str)
    )


def problems_credentials(config: Config) -> list[str]:
    problems = []
    for path, name, value in all_attributes(config):
        where = f"{'.'.join(path)}.{name}"
        remote = path[0].startswith(REMOTE_COMPONENT_PREFIXES)
        if name in CREDENTIAL_ATTRIBUTES or (remote and name in REMOTE_LOCATION_ATTRIBUTES):
            if isinstance(value, ObjectExpr):
                bad = [k for k, v in value.fields if not _is_env_read(v)]
                if bad:
                    problems.append(f'{where}: header(s) {bad} must each be sys.env("...")')
            elif not _is_env_read(value):
                problems.append(
                    f'{where} must be read with sys.env("..."), not written in the file'
                )
    return problems


def problems_literal_secrets(config: Config) -> list[str]:
    problems = []
    literals = [
        node.value
        for _, _, value in all_attributes(config)
        for node in walk_expr(value)
        if isinstance(node, Lit) and isinstance(node.value, str)
    ]
    for text in literals:
        if any(p.search(text) for p in TOKEN_LIKE):
            problems.append(f"a string literal looks like a secret: {text[:8]}…")
    for lineno, line in enumerate(config.text.splitlines(), 1):
        if any(p.search(line) for p in TOKEN_LIKE[:3]):
            problems.append(f"line {lineno} holds something like a token (even in a comment)")
    return problems


def _targets(config: Config, block: Block, signal: str) -> list[str]:
    output = block.child("output")
    value = output.attr(signal) if output else None
    if not isinstance(value, ListExpr):
        return []
    ids = []
    for item in value.items:
        if isinstance(item, Ref):
            owner = next((c for c in config.components if item.path.startswith(c + ".")), None)
            if owner:
                ids.append(owner)
    return ids


def signal_paths(config: Config, signal: str) -> list[list[str]]:
    """Every path a signal takes from an OTLP receiver, following the output blocks."""
    components = config.components
    paths: list[list[str]] = []

    def follow(path: list[str]) -> None:
        nexts = [n for n in _targets(config, components[path[-1]], signal) if n not in path]
        if not nexts:
            paths.append(path)
        for n in nexts:
            follow([*path, n])

    for cid, block in components.items():
        if block.name == "otelcol.receiver.otlp":
            follow([cid])
    return paths


def problems_signal_wiring(config: Config) -> list[str]:
    components = config.components
    problems = []
    for signal in SIGNALS:
        delivered = False
        for path in signal_paths(config, signal):
            end = components[path[-1]]
            if end.name != "otelcol.exporter.otlphttp":
                problems.append(
                    f"{signal}: {' -> '.join(path)} ends without an otelcol.exporter.otlphttp"
                )
                continue
            if not any(components[c].name == "otelcol.processor.batch" for c in path):
                problems.append(f"{signal}: {' -> '.join(path)} skips otelcol.processor.batch")
            client = end.child("client")
            auth = client.attr("auth") if client else None
            if not (isinstance(auth, Ref) and auth.path.startswith("otelcol.auth.basic.")):
                problems.append(f"{signal}: {end.component_id} sends without otelcol.auth.basic")
                continue
            delivered = True
        if not delivered:
            problems.append(f"{signal} never reaches Grafana Cloud")
    return problems


def problems_scrape_wiring(config: Config) -> list[str]:
    components = config.components
    problems = []
    scrapes = [b for b in components.values() if b.name == "prometheus.scrape"]
    defaults: set[str] = set()
    for scrape in scrapes:
        for target in evaluate(scrape.attr("targets") or ListExpr(()), {}):
            defaults.add(target.get("__address__", ""))
        forward = scrape.attr("forward_to")
        refs = [i.path for i in forward.items] if isinstance(forward, ListExpr) else []
        if not any(
            r.startswith("prometheus.remote_write.") and r.endswith(".receiver") for r in refs
        ):
            problems.append(f"{scrape.component_id} does not forward to a prometheus.remote_write")
    if "127.0.0.1:9464" not in defaults:
        problems.append(
            "no prometheus.scrape target defaults to the kernel's /metrics at 127.0.0.1:9464"
        )
    if not any(a != "127.0.0.1:9464" and _is_loopback(a) for a in defaults):
        problems.append("no prometheus.scrape target for the /metrics of `o11ylab serve`")
    for rw in (b for b in components.values() if b.name == "prometheus.remote_write"):
        endpoint = rw.child("endpoint")
        if endpoint is None or endpoint.child("basic_auth") is None:
            problems.append(f"{rw.component_id} has no endpoint with basic_auth")
    return problems


def read_env_file(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def problems_env_example(config: Config, env_text: str) -> list[str]:
    example = read_env_file(env_text)
    reads = env_reads(config)
    problems = [
        f"config reads {n} but alloy.env.example does not name it"
        for n in sorted(reads - set(example))
    ]
    problems += [
        f"alloy.env.example names {n}, which the config never reads"
        for n in sorted(set(example) - reads)
    ]
    for key, value in example.items():
        if any(p.search(value) for p in TOKEN_LIKE):
            problems.append(f"alloy.env.example: {key} looks like a real secret; use a placeholder")
    return problems


CHECKS: dict[str, Callable[[Config], list[str]]] = {
    "component types": problems_component_types,
    "references": problems_references,
    "arguments": problems_arguments,
    "receiver on loopback": problems_receiver_loopback,
    "credentials from sys.env": problems_credentials,
    "no literal secret": problems_literal_secrets,
    "traces, metrics and logs reach Grafana Cloud": problems_signal_wiring,
    "scraped /metrics reach remote_write": problems_scrape_wiring,
}

# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config_text() -> str:
    return CONFIG_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def config(config_text: str) -> Config:
    return parse_alloy(config_text)


@pytest.fixture(scope="module")
def env_text() -> str:
    return ENV_EXAMPLE_PATH.read_text(encoding="utf-8")


def test_config_parses_as_alloy_syntax(config: Config) -> None:
    assert config.components, "config.alloy defines no component"


@pytest.mark.parametrize("check", list(CHECKS), ids=list(CHECKS))
def test_config_passes(check: str, config: Config) -> None:
    assert CHECKS[check](config) == []


def test_env_example_names_exactly_what_the_config_reads(config: Config, env_text: str) -> None:
    assert problems_env_example(config, env_text) == []


def test_env_example_defaults_match_the_config_defaults(config: Config, env_text: str) -> None:
    """Copying the example unchanged must not change where Alloy listens or what it scrapes."""
    example = read_env_file(env_text)
    for _, _name, value in all_attributes(config):
        for node in walk_expr(value):
            if isinstance(node, Call) and node.func == "coalesce" and _is_env_read(node.args[0]):
                var = node.args[0].args[0].value
                assert example[var] == evaluate(node.args[1], {}), f"{var} in alloy.env.example"


def test_env_values_flow_into_the_config(config: Config) -> None:
    """With the env file filled in, the exporters point where the user said."""
    env = {
        "GRAFANA_CLOUD_OTLP_ENDPOINT": "https://otlp.example/otlp",
        "GRAFANA_CLOUD_PROMETHEUS_URL": "https://prom.example/api/prom/push",
        "ALLOY_OTLP_HTTP_LISTEN": "0.0.0.0:4318",
    }
    components = config.components
    exporter = next(b for b in components.values() if b.name == "otelcol.exporter.otlphttp")
    assert evaluate(exporter.child("client").attr("endpoint"), env) == "https://otlp.example/otlp"
    rw = next(b for b in components.values() if b.name == "prometheus.remote_write")
    assert evaluate(rw.child("endpoint").attr("url"), env) == "https://prom.example/api/prom/push"
    receiver = next(b for b in components.values() if b.name == "otelcol.receiver.otlp")
    assert evaluate(receiver.child("http").attr("endpoint"), env) == "0.0.0.0:4318"


def test_grammar_reads_alloy_constructs() -> None:
    """The parser understands what real Alloy files use, so its verdicts mean something."""
    parsed = parse_alloy(r"""
        /* block comment */
        logging { level = "info" }
        local.file "token" { filename = `C:\raw\path` }
        prometheus.relabel "x" {
          forward_to = [prometheus.remote_write.y.receiver,]
          rule {
            action = "keep"
            regex  = "a|b" // not a comment: "https://x"
            url    = "https://example.invalid/a//b"
          }
          extra = { "a.b" = 1, c = [1.5, -2, true, null], d = !false && 1 + 2 * 3 ^ 2 >= 4 }
          picked = local.file.token.content[0]
        }
    """)
    relabel = parsed.components["prometheus.relabel.x"]
    assert relabel.attr("forward_to") == ListExpr((Ref("prometheus.remote_write.y.receiver"),))
    assert dict(relabel.attr("extra").fields)["a.b"] == Lit(1)
    assert parsed.components["local.file.token"].attr("filename") == Lit(r"C:\raw\path")
    assert relabel.child("rule").attr("regex") == Lit("a|b")
    assert relabel.child("rule").attr("url") == Lit("https://example.invalid/a//b")


@pytest.mark.parametrize("broken", ["a {", 'x "l" { y = }', "a = [1 2]", 'b "l" { c = "open }'])
def test_grammar_rejects_broken_syntax(broken: str) -> None:
    with pytest.raises(LarkError):
        parse_alloy(broken)


# Each breakage a careless edit could make, and the check that must catch it.
BREAKAGES = [
    (
        "dangling reference",
        "references",
        "traces  = [otelcol.exporter.otlphttp.grafana_cloud.input]",
        "traces  = [otelcol.exporter.otlphttp.grafana_clod.input]",
    ),
    (
        "wrong export field",
        "references",
        "auth     = otelcol.auth.basic.grafana_cloud.handler",
        "auth     = otelcol.auth.basic.grafana_cloud.input",
    ),
    (
        "misspelled component type",
        "component types",
        'otelcol.exporter.otlphttp "grafana_cloud"',
        'otelcol.exporter.otlp_http "grafana_cloud"',
    ),
    ("misspelled argument", "arguments", "scrape_interval =", "scrape_intervall ="),
    ("receiver open to the network", "receiver on loopback", '"127.0.0.1:4318"', '"0.0.0.0:4318"'),
    (
        "password written in the file",
        "credentials from sys.env",
        'password = sys.env("GRAFANA_CLOUD_API_TOKEN")',
        'password = "hunter2"',
    ),
    (
        "endpoint written in the file",
        "credentials from sys.env",
        'endpoint = sys.env("GRAFANA_CLOUD_OTLP_ENDPOINT")',
        'endpoint = "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp"',
    ),
    (
        "token pasted into a comment",
        "no literal secret",
        "// Basic auth for the Grafana Cloud OTLP gateway",
        "// Basic auth: glc_" + "Q" * 30,
    ),
    (
        "logs dropped by the batch processor",
        "traces, metrics and logs reach Grafana Cloud",
        "\t\tlogs    = [otelcol.exporter.otlphttp.grafana_cloud.input]\n",
        "",
    ),
    (
        "batch processor bypassed",
        "traces, metrics and logs reach Grafana Cloud",
        "traces  = [otelcol.processor.batch.lab.input]",
        "traces  = [otelcol.exporter.otlphttp.grafana_cloud.input]",
    ),
    (
        "scrape forwarding nowhere",
        "scraped /metrics reach remote_write",
        "forward_to      = [prometheus.remote_write.grafana_cloud.receiver]",
        "forward_to      = []",
    ),
]


@pytest.mark.parametrize(("what", "check", "old", "new"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_each_check_catches_its_breakage(
    config_text: str, what: str, check: str, old: str, new: str
) -> None:
    assert config_text.count(old) >= 1, f"the mutation for {what!r} no longer applies: update it"
    broken = parse_alloy(config_text.replace(old, new, 1))
    assert CHECKS[check](broken), f"{check!r} did not notice: {what}"


def test_env_check_catches_a_variable_missing_from_the_example(
    config_text: str, env_text: str
) -> None:
    broken = parse_alloy(
        config_text.replace('sys.env("GRAFANA_CLOUD_INSTANCE_ID")', 'sys.env("GRAFANA_CLOUD_USER")')
    )
    problems = problems_env_example(broken, env_text)
    assert any("GRAFANA_CLOUD_USER" in p for p in problems)
    assert any("GRAFANA_CLOUD_INSTANCE_ID" in p for p in problems)


def test_env_check_catches_a_real_looking_token(config: Config, env_text: str) -> None:
    leaked = env_text.replace("YOUR_ACCESS_POLICY_TOKEN", "glc_" + "eyJrIjoi" * 5)
    assert problems_env_example(config, leaked)


def test_parse_error_on_a_missing_brace(config_text: str) -> None:
    with pytest.raises(LarkError):
        parse_alloy(config_text.rstrip().removesuffix("}"))


def test_readme_names_only_real_variables_and_the_lab_endpoint(env_text: str) -> None:
    readme = README_PATH.read_text(encoding="utf-8")
    known = set(read_env_file(env_text))
    mentioned = set(re.findall(r"\b((?:GRAFANA_CLOUD|ALLOY)_[A-Z0-9_]+)\b", readme))
    assert mentioned <= known, f"README mentions unknown variables: {sorted(mentioned - known)}"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318" in readme


def test_compose_keeps_everything_on_loopback_and_uses_this_config() -> None:
    compose = yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))
    services = compose["services"]
    alloy = next(s for s in services.values() if "grafana/alloy" in s.get("image", ""))
    assert any(str(v).startswith("./config.alloy:") for v in alloy.get("volumes", []))
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
