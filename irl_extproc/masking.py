"""Redaction strategies for detected values, and reversible masking within one stream.

- ``placeholder``: typed placeholders, ``[EMAIL_1]``; the same value gets the same placeholder
  for the whole stream (request and response), so the model still sees who is who.
- ``partial``: ``****1234`` (e-mail: ``****@example.com``).
- ``hash``: ``[EMAIL:3f9a…]``, an HMAC-SHA256 under an operator key, stable across streams so
  records can be joined without revealing the value.
- ``remove``: the value is cut out.

Reversible masking keeps ``placeholder → original`` in ``CheckContext.state`` only (the
stream's memory, never logged); ``restore`` puts the originals back into response text.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from irl_extproc.codecs.base import set_at
from irl_extproc.conversation import Conversation
from irl_extproc.invariants.base import CheckContext

Strategy = Literal["placeholder", "partial", "hash", "remove"]
DEFAULT_KEY_ENV = "IRL_MASK_KEY"
_VAULT_KEY = "masking"
_PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]*_\d+)\]")


@dataclass(slots=True)
class _Vault:
    """One stream's placeholders. Values are indexed by a keyed digest, not kept, unless reversible."""

    salt: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    by_digest: dict[bytes, str] = field(default_factory=dict)
    originals: dict[str, str] = field(default_factory=dict)  # only for reversible masking
    counters: Counter[str] = field(default_factory=Counter)

    def placeholder(self, label: str, value: str, reversible: bool) -> str:
        digest = hmac.digest(self.salt, f"{label}\0{value}".encode(), "sha256")
        name = self.by_digest.get(digest)
        if name is None:
            self.counters[label] += 1
            name = f"{label}_{self.counters[label]}"
            self.by_digest[digest] = name
        if reversible:
            self.originals[name] = value
        return f"[{name}]"


def _vault(context: CheckContext) -> _Vault:
    vault = context.state.get(_VAULT_KEY)
    if not isinstance(vault, _Vault):
        vault = context.state[_VAULT_KEY] = _Vault()
    return vault


def placeholder_mark(context: CheckContext) -> Counter[str]:
    """How many placeholders of each label this stream has handed out so far."""
    return Counter(_vault(context).counters)


def drop_placeholders_since(context: CheckContext, mark: Counter[str], keep: set[str]) -> None:
    """Take back the placeholders handed out since ``mark`` that no text in ``keep`` uses.

    A streamed value still arriving is masked at every check ("jane@example.co", then
    "jane@example.com"); only the version the client gets should take a number.
    """
    vault = _vault(context)
    if all(count <= mark[label] for label, count in vault.counters.items()):
        return
    for digest, name in list(vault.by_digest.items()):
        label, number = name.rsplit("_", 1)
        if int(number) > mark[label] and f"[{name}]" not in keep:
            del vault.by_digest[digest]
            vault.originals.pop(name, None)
    used: Counter[str] = Counter()
    for name in vault.by_digest.values():
        label, number = name.rsplit("_", 1)
        used[label] = max(used[label], int(number))
    for label in vault.counters:
        vault.counters[label] = max(mark[label], used[label])


def hash_key_from_env(variable: str) -> bytes:
    """The HMAC key for ``hash`` masking; a missing key is a policy-load error, not a weak default."""
    key = os.environ.get(variable, "")
    if len(key) < 16:
        raise ValueError(
            f"redaction 'hash' needs a secret key of at least 16 characters in the environment variable "
            f"{variable}; set it (e.g. `export {variable}=$(openssl rand -hex 32)`) or choose another redaction"
        )
    return key.encode()


class Masker:
    """Turns a detected value into its replacement text under one strategy."""

    def __init__(self, strategy: Strategy, *, reversible: bool = False, hash_key: bytes | None = None) -> None:
        if strategy == "hash" and hash_key is None:
            raise ValueError("hash masking needs a key")
        if reversible and strategy != "placeholder":
            raise ValueError("only placeholder masking can be reversed")
        self.strategy = strategy
        self.reversible = reversible
        self._hash_key = hash_key

    def mask(self, kind: str, value: str, context: CheckContext) -> str:
        label = kind.upper()
        if self.strategy == "placeholder":
            return _vault(context).placeholder(label, value, self.reversible)
        if self.strategy == "partial":
            return partial(value)
        if self.strategy == "hash":
            assert self._hash_key is not None
            return f"[{label}:{hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()[:16]}]"
        return ""


def partial(value: str) -> str:
    """Keep only what identifies nothing on its own: the last four characters or the mail domain."""
    if "@" in value:
        return "****@" + value.rsplit("@", 1)[1]
    compact = value.replace(" ", "").replace("-", "")
    return "****" + compact[-4:] if len(compact) >= 8 else "****"


def restore(text: str, context: CheckContext) -> str:
    """Put back the originals of this stream's reversible placeholders (unknown ones stay)."""
    vault = context.state.get(_VAULT_KEY)
    if not isinstance(vault, _Vault) or not vault.originals or "[" not in text:
        return text
    originals = vault.originals
    return _PLACEHOLDER.sub(lambda m: originals.get(m.group(1), m.group(0)), text)


def restore_conversation(conversation: Conversation, context: CheckContext) -> int:
    """Restore placeholders in every segment of a (response) conversation, writing the body by path.

    Returns how many segments changed; the caller re-encodes the body when it is not zero.
    """
    changed = 0
    for segment in conversation.segments:
        restored = restore(segment.text, context)
        if restored != segment.text:
            segment.text = restored
            set_at(conversation.body, segment.path, restored)
            changed += 1
    return changed
