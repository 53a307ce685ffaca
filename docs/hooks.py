"""MkDocs hooks: the pages generated from the code at build time.

- ``configuration.md``: its marker is replaced by the table of every setting, from
  ``broker.core.settings.documented_fields()``.
- ``reference.md``: its marker is replaced by the OpenAPI document rendered as Markdown.
- ``openapi.json``: the raw OpenAPI document, written to the site beside the pages.

So neither page can drift from the code: the generated text is never committed.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages

from broker.core.settings import SettingDoc, documented_fields  # noqa: E402
from broker.front.app import all_routes  # noqa: E402
from broker.front.openapi import build  # noqa: E402

SETTINGS_MARKER = "<!-- generated: settings -->"
OPENAPI_MARKER = "<!-- generated: openapi -->"

# Settings by topic: the first pattern a field's name matches places it (order matters).
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    (
        "Redis, retention and the live path",
        (
            "redis_url",
            "redis_wait_seconds",
            "key_prefix",
            "stream_maxlen",
            "idle_ttl_seconds",
            "idempotency_ttl_seconds",
            "redis_pool_size",
            "redis_cluster",
            "job_shards",
            "live_ping_seconds",
        ),
    ),
    (
        "Streams",
        (
            "keepalive_seconds",
            "retry_ms",
            "replay_batch",
            "client_queue_frames",
            "max_streams_per_conversation",
            "ds_*",
        ),
    ),
    (
        "Requests, connections and runs",
        ("max_*", "cancel_wait_seconds", "header_timeout_seconds", "idle_connection_seconds"),
    ),
    ("Authentication and browsers", ("auth", "jwt_*", "session_cookie", "cors_origins")),
    ("Per-subject limits", ("limit_*", "stream_lease_seconds")),
    (
        "Workers",
        (
            "coalesce_ms",
            "worker_concurrency",
            "shutdown_grace_seconds",
            "job_block_ms",
            "lease_seconds",
            "reap_interval_seconds",
            "redis_retry_seconds",
        ),
    ),
    ("Model providers and context", ("models_file", "openai_*", "provider_*", "context_*")),
    ("Generators, webhook and tap", ("generators", "webhook_*", "outbox_maxlen")),
    ("Logs and metrics", ("log_*", "access_log", "metrics_token", "worker_metrics_*")),
    ("The command line's client commands", ("url", "token")),
]


def group_of(setting: SettingDoc) -> str:
    name = setting.variable.removeprefix("BROKER_").lower()
    for title, patterns in GROUPS:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return title
    return "Other settings"


def _cell(text: str) -> str:
    """Text fit for one table cell: one line, pipes escaped outside code spans."""
    pieces = " ".join(text.split()).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(pieces))


def render_settings(settings: list[SettingDoc]) -> str:
    grouped: dict[str, list[SettingDoc]] = {title: [] for title, _ in GROUPS}
    for setting in settings:
        grouped.setdefault(group_of(setting), []).append(setting)
    out: list[str] = []
    for title, members in grouped.items():
        if not members:
            continue
        out += [f"## {title}", "", "| variable | type | default | meaning |", "|---|---|---|---|"]
        for s in members:
            default = f"`{s.default}`" if s.default else "*(empty)*"
            out.append(f"| `{s.variable}` | {s.type} | {default} | {_cell(s.description)} |")
        out.append("")
    return "\n".join(out)


def _schema_text(schema: dict[str, Any]) -> str:
    """A short name for a JSON Schema: a link for a reference, else its type."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_schema_text(option) for option in schema[key])
    if "enum" in schema:
        return ", ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if schema.get("type") == "array":
        return f"array of {_schema_text(schema.get('items', {}))}"
    return schema.get("type", "any")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _codes(description: str) -> str:
    """An error response's description is "`code`: meaning; ...": one code a line."""
    return "<br>".join(_cell(part) for part in re.split(r"; (?=`)", description))


def render_openapi(document: dict[str, Any]) -> str:
    info = document["info"]
    out = [f"{info['title']}, API version {info['version']} (OpenAPI {document['openapi']}).", ""]
    out += [info["description"], "", "The raw document: [openapi.json](openapi.json).", ""]
    errors: dict[str, tuple[str, str]] = {}
    for tag in document["tags"]:
        operations = [
            (path, method, op)
            for path, item in document["paths"].items()
            for method, op in item.items()
            if tag["name"] in op.get("tags", ())
        ]
        if not operations:
            continue
        out += [f"## {tag['name']}", "", _sentence(tag["description"]), ""]
        for path, method, op in operations:
            out += [f"### `{method.upper()} {path}`", "", f"**{op.get('summary', '')}**", ""]
            if op.get("description"):
                out += [op["description"], ""]
            if op.get("security"):
                schemes = ", ".join(name for entry in op["security"] for name in entry)
                out += [f"Authentication: {schemes}.", ""]
            if op.get("parameters"):
                out += ["| parameter | in | required | meaning |", "|---|---|---|---|"]
                for p in op["parameters"]:
                    required = "yes" if p.get("required") else "no"
                    description = _cell(p.get("description", ""))
                    out.append(f"| `{p['name']}` | {p['in']} | {required} | {description} |")
                out.append("")
            if "requestBody" in op:
                for media, body in op["requestBody"]["content"].items():
                    schema = body.get("schema", {})
                    name = _schema_text(schema) if schema else "any bytes"
                    out += [f"Request body (`{media}`): {name}.", ""]
                    if "description" in schema:
                        out += [schema["description"], ""]
            out += ["| status | meaning | body |", "|---|---|---|"]
            for status, response in op["responses"].items():
                description = response.get("description", "")
                bodies = [_schema_text(c["schema"]) for c in response.get("content", {}).values()]
                if int(status) >= 400:
                    for code, meaning in re.findall(r"`(\w+)`: ([^;]*)", description):
                        errors.setdefault(code, (status, meaning))
                    description = _codes(description)
                out.append(f"| {status} | {_cell(description)} | {', '.join(bodies)} |")
            out.append("")
    out += ["## Error codes", "", "Every error code an operation above lists.", ""]
    out += ["| code | status | meaning |", "|---|---|---|"]
    for code, (status, meaning) in sorted(errors.items()):
        out.append(f"| `{code}` | {status} | {_cell(meaning)} |")
    out += ["", "## Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        out += [f"### {name}", ""]
        if schema.get("description"):
            out += [schema["description"], ""]
        if "properties" in schema:
            out += ["| field | type | required | meaning |", "|---|---|---|---|"]
            for field, spec in schema["properties"].items():
                required = "yes" if field in schema.get("required", ()) else "no"
                description = _cell(spec.get("description", ""))
                out.append(f"| `{field}` | {_schema_text(spec)} | {required} | {description} |")
            out.append("")
        elif "oneOf" in schema or "anyOf" in schema:
            out += [f"One of {_schema_text(schema)}.", ""]
    return "\n".join(out)


def _replace(markdown: str, marker: str, content: str, page: str) -> str:
    if marker not in markdown:
        raise PluginError(f"{page}: the marker {marker} is missing")
    return markdown.replace(marker, content)


def on_files(files: Files, config: Any) -> Files:
    document = json.dumps(build_openapi(), indent=2, ensure_ascii=False)
    files.append(File.generated(config, "openapi.json", content=document))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri == "configuration.md":
        return _replace(markdown, SETTINGS_MARKER, render_settings(documented_fields()), page)
    if page.file.src_uri == "reference.md":
        return _replace(markdown, OPENAPI_MARKER, render_openapi(build_openapi()), page)
    return markdown


def build_openapi() -> dict[str, Any]:
    """The document the fronts serve: generated from their routes."""
    return build(all_routes())
