"""The policy file, version 1: pydantic models with extra="forbid".

Each layer (``defaults`` → ``services.<name>`` → ``routes[]``) uses the same optional
models; ``resolve.py`` merges them into one effective setting per route.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model, model_validator

from irl_extproc.budgets.identity import IdentityConfig
from irl_extproc.invariants.base import InvariantConfig
from irl_extproc.invariants.registry import REGISTRY
from irl_extproc.policy.resilience import Resilience
from irl_extproc.policy.units import ByteSize, Duration

ApiFormat = Literal["auto", "openai-chat", "openai-responses", "anthropic-messages"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _entry_model(config: type[InvariantConfig]) -> type[BaseModel]:
    """``{pii: {...}}``: a one-key object naming the invariant, as written in policies."""
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{config.__name__.removesuffix('Config')}Entry",
        __config__=ConfigDict(extra="forbid", frozen=True),
        **{config.name: (config, ...)},
    )


ENTRY_MODELS = {name: _entry_model(t.config) for name, t in REGISTRY.items()}


def _entry_tag(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value)))
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


# The union's members come from the registry, so adding an invariant needs no edit here.
InvariantEntry = Annotated[  # type: ignore[valid-type]
    Union[tuple(Annotated[model, Tag(name)] for name, model in ENTRY_MODELS.items())],  # noqa: UP007
    Discriminator(
        _entry_tag,
        custom_error_type="invariant_entry",
        custom_error_message="each invariant is a one-key object such as {pii: {action: redact}}; "
        "valid names: " + ", ".join(sorted(ENTRY_MODELS)),
    ),
]


def entry_config(entry: BaseModel) -> InvariantConfig:
    config = getattr(entry, next(iter(type(entry).model_fields)))
    assert isinstance(config, InvariantConfig)
    return config


class Sentinel(Strict):
    """LLM invariants for a layer. Unset fields inherit from the layer above."""

    mode: Literal["enforce", "monitor"] | None = Field(
        None, description="enforce acts on findings; monitor only records them"
    )
    on_error: Literal["fail_open", "fail_closed"] | None = Field(
        None,
        description="what happens when IRL is down or a body cannot be read: fail_open lets the "
        "request through (flagged), fail_closed refuses it",
    )
    format: ApiFormat | None = Field(None, description="LLM API format; auto picks it from the path")
    max_body_bytes: ByteSize | None = Field(None, description="bodies above this are refused (default 1MiB)")
    content_encoding: Literal["decode", "reject"] | None = Field(
        None, description="gzip/deflate bodies: decode and inspect them, or refuse them"
    )
    block_status: int | None = Field(None, ge=400, le=599, description="HTTP status of a block")
    message_timeout: Duration | None = Field(None, description="Envoy's per-message ext_proc timeout")
    log_content: bool | None = Field(
        None, description="allow raw prompt/completion content in logs and audit (off by default)"
    )
    stream_window_chars: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="streamed responses: characters held back, so a value of up to this length split "
        "across events is redacted or blocked before any of it is sent (default 128)",
    )
    stream_window_time: Duration | None = Field(
        None,
        description="streamed responses: held text is sent at most this long after it arrived, even if "
        "fewer characters followed it (default 1s; '0s' turns the time bound off)",
    )
    stream_whole_response: Literal["buffer", "append_error"] | None = Field(
        None,
        description="streamed responses with whole-response invariants (e.g. json_schema): buffer the "
        "whole stream and send it only if valid, or stream it and end with an error event if the "
        "result is invalid (default buffer)",
    )
    request: list[InvariantEntry] | None = None  # type: ignore[valid-type]
    response: list[InvariantEntry] | None = None  # type: ignore[valid-type]


class Layer(Strict):
    sentinel: Sentinel | None = None
    resilience: Resilience | None = None


class Match(Strict):
    prefix: str | None = Field(None, pattern=r"^/")
    path: str | None = Field(None, pattern=r"^/")
    methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Match:
        if (self.prefix is None) == (self.path is None):
            raise ValueError("give exactly one of 'prefix' or 'path', e.g. {prefix: /v1/chat/completions}")
        return self


class Route(Layer):
    name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="default: from the match")
    match: Match


class Upstream(Strict):
    address: str = Field(description="host name or IP of the service's upstream")
    port: int = Field(ge=1, le=65535)
    tls: bool = Field(False, description="originate TLS to the upstream (SNI = address)")
    host_rewrite: str | None = Field(None, description="Host header sent upstream (default: unchanged)")


class Service(Layer):
    upstream: Upstream
    hosts: list[str] | None = Field(None, description="virtual host domains; default matches any host")
    routes: list[Route] = Field(default_factory=lambda: [Route(match=Match(prefix="/"))])


class Listener(Strict):
    address: str = "127.0.0.1"
    port: int = Field(10000, ge=0, le=65535)


class TelemetrySettings(Strict):
    otlp_endpoint: str | None = Field(
        None,
        pattern=r"^[^:\s]+:\d+$",
        description="OTLP/gRPC collector (host:port) for Envoy's and IRL's traces and IRL's metrics; "
        "`irl serve --otlp-endpoint` / `irl up --otlp` win over it",
    )
    trace_sampling: float = Field(
        100.0, ge=0.0, le=100.0, description="percent of requests Envoy traces (IRL follows Envoy's decision)"
    )


class PolicyDocument(Strict):
    """A whole policy file."""

    version: Literal[1]
    listener: Listener = Field(default_factory=Listener)
    identity: IdentityConfig = Field(
        default_factory=IdentityConfig,
        description="where tenant / api_key / team come from: Envoy metadata, attributes, or Envoy-set headers",
    )
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    defaults: Layer = Field(default_factory=Layer)
    services: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")], Service] = Field(min_length=1)
