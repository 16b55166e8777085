"""Links in the output must point at allowed domains (stops hallucinated and phishing links)."""

from __future__ import annotations

import re
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from irl_extproc.conversation import Conversation, Segment, Source
from irl_extproc.detect.prefix import TailHold
from irl_extproc.invariants.base import Action, CheckContext, Finding
from irl_extproc.invariants.common import ScopedConfig, in_scope, scoped_texts

# Project-written, linear: a scheme or www. prefix, then non-space URL characters.
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`)\]]+", re.IGNORECASE)
_URL_TAIL = TailHold(python_patterns=[_URL])  # a link still arriving is held whole (streams)


class LinksConfig(ScopedConfig):
    name: ClassVar[str] = "links"
    sources: list[Source] | None = Field(["assistant", "tool_call"], min_length=1,  # type: ignore[assignment]
                                         description="parts to check (default: the model's output)")
    allowed_domains: list[str] = Field(
        min_length=1, description="domains whose URLs may appear; a domain also allows its subdomains"
    )
    allow_http: bool = Field(True, description="false: plain http:// links are findings too")
    action: Action = "redact"
    replacement: str = "[link removed]"

    @field_validator("allowed_domains")
    @classmethod
    def _plain_domains(cls, domains: list[str]) -> list[str]:
        for d in domains:
            if "/" in d or ":" in d or not re.fullmatch(r"[A-Za-z0-9.-]+", d):
                raise ValueError(f"allowed_domains entry {d!r} must be a bare domain such as example.com "
                                 "(no scheme, port or path)")
        return [d.lower().strip(".") for d in domains]


class Links:
    def __init__(self, config: LinksConfig) -> None:
        self.config = config
        self._allowed = tuple(config.allowed_domains)

    def _allowed_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == d or host.endswith("." + d) for d in self._allowed)

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        c, findings = self.config, []
        for index, segment in scoped_texts(conversation, c.sources):
            for m in _URL.finditer(segment.text):
                url = m.group().rstrip(".,;:!?")
                parsed = urlsplit(url if "://" in url else "http://" + url)
                host = parsed.hostname or ""
                insecure = not c.allow_http and url.lower().startswith("http://")
                if self._allowed_host(host) and not insecure:
                    continue
                rule = "links.insecure" if self._allowed_host(host) else "links.domain"
                findings.append(Finding(c.name, rule, c.action, "link to a domain outside allowed_domains"
                                        if rule == "links.domain" else "plain http link", segment=index,
                                        start=m.start(), end=m.start() + len(url), replacement=c.replacement))
        return findings

    def hold(self, segment: Segment, context: CheckContext) -> int:
        return _URL_TAIL.hold(segment.text) if in_scope(segment, self.config.sources) else len(segment.text)
