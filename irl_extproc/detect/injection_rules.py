"""Heuristics for the known prompt-injection and jailbreak families.

Each rule is an *act*, not a topic: "ignore your previous instructions" is an instruction
override, while "how do I ignore whitespace in git diff" or "what is a system prompt" is not.
Patterns run on the normalised, lower-cased text. They are fixed, project-written and linear
(bounded gaps like ``.{0,40}`` never nest), so stdlib ``re`` is safe here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from irl_extproc.detect.gate import Gate


@dataclass(frozen=True, slots=True)
class Rule:
    family: str
    name: str
    weight: float  # probability-like strength of one hit
    regex: re.Pattern[str]




def _rule(family: str, name: str, weight: float, pattern: str) -> Rule:
    return Rule(family, name, weight, re.compile(pattern))


_IGNORE = r"(?:ignore|disregard|forget|skip|override|overwrite|bypass|neglect|drop|abandon|discard|set aside)"
_PRIOR = r"(?:previous|prior|preceding|above|earlier|former|initial|original|old|existing|given|system|developer)"
_ORDERS = (
    r"(?:instructions?|prompts?|rules|directions|directives|guidelines|guidance|context|commands|"
    r"orders|constraints|programming|restrictions|policies|polic(?:y|ies)|limitations|filters|training|"
    r"tasks?|messages?|text|content|everything|all)"
)
_YOUR = r"(?:(?:all|any|every|each|the|your|my|these|those|of|that|this)\s+){0,3}"
_AI = r"(?:ai|assistant|chatbot|bot|model|llm|gpt|chatgpt|claude|language model|agent|copilot)"
_RESTRICTIONS = r"(?:restrictions?|filters?|limitations?|limits|censorship|guidelines|rules|boundaries|safeguards)"

RULES: tuple[Rule, ...] = (
    # --- instruction override ---------------------------------------------------------------
    _rule("instruction_override", "ignore_previous", 0.93,
          rf"\b{_IGNORE}\s+{_YOUR}(?:{_PRIOR}\s+(?:(?:and|or|&)\s+\w+\s+)?){{1,2}}(?:\w+\s+)?{_ORDERS}\b"),
    _rule("instruction_override", "ignore_all_instructions", 0.9,
          rf"\b{_IGNORE}\s+(?:all|any|every|your)\s+(?:\w+\s+)?(?:instructions|rules|guidelines|directives)\b"),
    _rule("instruction_override", "forget_everything", 0.85,
          r"\b(?:forget|ignore|disregard)\s+(?:about\s+)?(?:everything|all)\s+(?:(?:you|i|we)\s+|that\s+)?"
          r"(?:above|before|previously|said|was said|have been told|were told|you know|so far|earlier)"),
    _rule("instruction_override", "new_instructions", 0.75,
          r"(?:^|[\n.!:>\]])\s*(?:new|updated|real|actual|revised|important)\s+(?:instructions?|task|rules|orders)\s*[:!-]"),
    _rule("instruction_override", "instead_do", 0.55,
          rf"\b{_IGNORE}\s+(?:that|this|it|the above|what i said)\b.{{0,40}}\b(?:instead|and\s+(?:just\s+)?"
          r"(?:say|print|write|output|tell|respond))"),
    _rule("instruction_override", "do_not_follow", 0.8,
          rf"\b(?:do not|don't|stop|no longer)\s+(?:follow|obey|adhere to|comply with)\s+{_YOUR}"
          rf"(?:{_PRIOR}\s+)?(?:instructions|rules|guidelines|programming|policies|requests|{_AI}'?s? rules)\b"),
    _rule("instruction_override", "not_bound", 0.85,
          r"\b(?:you are|you're|are now|is now)\s+(?:no longer|not)\s+(?:bound|restricted|limited|constrained)\s+by\b"),
    _rule("instruction_override", "free_from", 0.8,
          r"\b(?:freed?|released|liberated|broken free)\s+from\s+(?:the\s+)?(?:typical\s+|usual\s+)?"
          r"(?:confines|restrictions|rules|shackles|limitations|chains)\b"),
    _rule("instruction_override", "stop_everything", 0.6,
          r"(?:^|\n)\s*(?:stop|wait|halt)\s*[!.]+\s*(?:now\s+)?(?:new|ignore|forget|instead)"),
    _rule("instruction_override", "override_multilingual", 0.9,
          r"\b(?:ignorier(?:e|en|t)?|vergiss|vergessen sie|missachte)\s+(?:\w+\s+){0,3}(?:anweisungen|instruktionen|"
          r"befehle|regeln|vorgaben|alles)\b|\bignore[zrs]?\s+(?:toutes\s+)?(?:les|vos)\s+(?:\w+\s+)?"
          r"(?:instructions|consignes|règles)\b|\b(?:ignora|olvida|ignore)\s+(?:todas\s+)?(?:las|tus)\s+"
          r"(?:\w+\s+)?(?:instrucciones|reglas|órdenes)\b|\bignora\s+(?:tutte\s+)?le\s+(?:\w+\s+)?istruzioni\b"),
    _rule("instruction_override", "orders_above", 0.85,
          rf"\b{_IGNORE}\s+{_YOUR}(?:instructions|directions|directives|prompts?|rules|orders|commands)\s+"
          r"(?:above|before this|given (?:above|before|earlier)|you (?:were|have been) given)\b"),
    _rule("instruction_override", "your_new_task", 0.7,
          r"\byour\s+(?:new|real|actual|next)\s+(?:task|instructions?|role|goal|objective|mission)\s+"
          r"(?:is|are|will be)\b"),
    _rule("instruction_override", "override_mode", 0.7,
          r"\b(?:admin|administrator|developer|system|root|sudo)\s+(?:override|access granted)\b"
          r"|\b(?:maintenance|opposite|sudo)\s+mode\b"),
    _rule("instruction_override", "stop_everything_alone", 0.6, r"(?:^|\n)\s*stop everything\b"),
    # --- role-play / DAN ---------------------------------------------------------------------
    _rule("roleplay_jailbreak", "dan", 0.95, r"\bdo anything now\b|\bdan mode\b|\bdan\s*(?:\d+(?:\.\d+)?|jailbreak)\b"),
    _rule("roleplay_jailbreak", "jailbreak_mode", 0.9,
          r"\b(?:developer|dev|god|debug|admin|unrestricted|evil|chaos|jailbr(?:oken|eak))\s+mode\s+"
          r"(?:enabled|activated|on|output|response)\b|\benable\s+(?:developer|dev|god|jailbreak)\s+mode\b"),
    _rule("roleplay_jailbreak", "no_restrictions_persona", 0.85,
          rf"\b(?:without|no|free of|free from|not have any|has no|have no|doesn't have any|does not have any)\s+"
          rf"(?:\w+\s+){{0,2}}(?:ethical|moral|content|safety)\s+{_RESTRICTIONS}"),
    _rule("roleplay_jailbreak", "unfiltered_ai", 0.85,
          rf"\b(?:unfiltered|uncensored|unrestricted|amoral|unethical|unbound|evil|rogue|jailbroken)\s+(?:and\s+\w+\s+)?"
          rf"(?:{_AI}|version|response|responses|persona|character|chatbot)\b"),
    _rule("roleplay_jailbreak", "pretend_no_rules", 0.8,
          rf"\b(?:pretend|imagine|act as if|roleplay as|role-play as|you are now|from now on you are)\b.{{0,80}}"
          rf"\b(?:no|without|any)\s+(?:\w+\s+)?{_RESTRICTIONS}\b"),
    _rule("roleplay_jailbreak", "stay_in_character", 0.6,
          r"\b(?:stay|remain|keep)\s+in\s+character\b.{0,120}\b(?:no matter|whatever|always|never break)"
          r"|\bnever\s+break\s+character\b"),
    _rule("roleplay_jailbreak", "two_responses", 0.75,
          r"\b(?:two|2)\s+(?:different\s+)?(?:responses|answers|paragraphs)\b.{0,160}\b(?:normal|classic|"
          r"standard|filtered)\b.{0,160}\b(?:jailbr|unfiltered|dan|developer mode|uncensored)"),
    _rule("roleplay_jailbreak", "never_refuse", 0.75,
          r"\b(?:never|not|don't|do not|cannot|can't|will not|won't)\s+(?:ever\s+)?(?:refuse|decline|deny)\s+"
          r"(?:a|any|to answer|to respond|requests?|questions?|an order|to do anything)\b"),
    _rule("roleplay_jailbreak", "openai_policy", 0.7,
          r"\b(?:openai|anthropic|content)(?:'s)?\s+(?:content\s+)?(?:polic(?:y|ies)|guidelines|rules)\b.{0,60}"
          r"\b(?:ignore|doesn't apply|do not apply|don't apply|not apply|bypass|break|violate|no longer)"),
    # --- system prompt extraction ------------------------------------------------------------
    _rule("prompt_extraction", "reveal_system_prompt", 0.9,
          r"\b(?:reveal|show|print|repeat|output|display|leak|dump|give|tell|share|write out|spell out|"
          r"recite|provide|list)\s+(?:me\s+|us\s+)?(?:back\s+)?(?:all\s+|exactly\s+)?(?:of\s+)?(?:your|the|its)\s+"
          r"(?:\w+\s+)?(?:system|initial|original|hidden|secret|internal|developer|first|full|exact)\s+"
          r"(?:prompt|instructions?|message|directives|rules|configuration|guidelines)\b"
          r"(?!\s+(?:for|of|on|from|in)\s+(?:the|a|an|my|our)\s)"),
    _rule("prompt_extraction", "repeat_above", 0.85,
          r"\b(?:repeat|print|output|copy|echo|reproduce)\s+(?:all\s+|everything\s+|"
          r"the\s+)?(?:words|text|content|everything|instructions|lines|tokens)?\s*(?:above|before this|"
          r"preceding|prior to this)\b(?!\s+(?:paragraph|article|passage|text:|code|list|table|example))"),
    _rule("prompt_extraction", "what_instructions", 0.6,
          r"\bwhat\s+(?:are|were|was)\s+(?:your|the)\s+(?:initial|original|first|system|hidden|secret)\s+"
          r"(?:instructions|prompt|rules|message)\b(?!\s+(?:for|in|of)\b)"),
    _rule("prompt_extraction", "start_of_prompt", 0.75,
          r"\b(?:beginning|start|first (?:line|word|sentence)s?)\s+of\s+(?:your|the)\s+(?:prompt|instructions|"
          r"conversation|context window)\b"),
    _rule("prompt_extraction", "password_secret", 0.55,
          r"\b(?:tell|give|reveal|spell|say|what is)\s+(?:me\s+)?(?:the|your)\s+(?:secret\s+)?"
          r"(?:password|passphrase|secret key|access code)\b(?!\s+(?:policy|policies|manager|strength|reset|"
          r"rules|requirements|hash|field|of (?:my|our|the) (?:own|wifi|router|account)))"),
    _rule("prompt_extraction", "your_instructions", 0.65,
          r"\b(?:show|display|output|print|reveal|repeat|encode|translate|leak|dump|give me|list|tell me|respond with|"
          r"recite|spell out|write out)\b.{0,30}\byour\s+(?:\w+\s+){0,2}(?:instructions|system prompt|prompt|"
          r"configuration|directives|guidelines|commands|initial prompt)\b"),
    _rule("prompt_extraction", "instructions_you_were_given", 0.75,
          r"\b(?:instructions?|prompt|rules|directives)\s+(?:that\s+)?you\s+(?:were|have been|got)\s+"
          r"(?:given|told)\b|\bwhat\s+(?:were|was)\s+you\s+told\b"),
    _rule("prompt_extraction", "complete_the_leak", 0.75,
          r"[\"'](?:my|your)\s+(?:instructions|system prompt|initial prompt|prompt)\s+(?:are|is|was|were)\b"
          r"|[\"']the\s+(?:system|initial|hidden)\s+prompt\s+(?:is|was)\b|[\"']i was (?:instructed|told) to\b"),
    _rule("prompt_extraction", "system_prompt_request", 0.7,
          r"\b(?:show|display|output|print|reveal|repeat|encode|leak|dump)\s+(?:me\s+)?(?:the\s+|your\s+)?"
          r"(?:\w+\s+)?system\s+(?:prompt|instructions|message|configuration)\b"
          r"|\bsystem\s+prompt\b.{0,20}\b(?:immediately|verbatim|word for word|in full)\b"),
    # --- delimiter / format injection --------------------------------------------------------
    _rule("delimiter_injection", "chat_markup", 0.85,
          r"<\|?(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\|?>|\[/?inst\]|<<sys>>|<</sys>>"),
    _rule("delimiter_injection", "fake_role_tag", 0.7,
          r"(?:^|\n)\s*(?:#{2,}\s*|\[|<)(?:system|admin|developer|root)(?:\s+(?:message|prompt|override|note))?"
          r"\s*(?:\]|>|:)"),
    _rule("delimiter_injection", "end_of_input", 0.65,
          r"\b(?:end|ignore)\s+(?:of\s+)?(?:the\s+)?(?:user|previous|above)\s+(?:input|prompt|text|document)\b"
          r"|(?:^|\n)\s*-{3,}\s*(?:end|begin)\s+(?:of\s+)?(?:system|prompt|instructions)"),
    _rule("delimiter_injection", "json_role", 0.55, r"[\"']role[\"']\s*:\s*[\"']system[\"']"),
    # --- indirect injection (instructions aimed at the model inside data) --------------------
    _rule("indirect_injection", "address_the_ai", 0.75,
          rf"\b(?:attention|note to|message to|instructions? (?:for|to)|dear|hey|hi|important:?)\s+(?:the\s+)?"
          rf"(?:{_AI}s?|ai language model|large language model)\b.{{0,80}}\b(?:ignore|disregard|instead|do not|"
          r"don't|forget|override|you must now)\b"),
    _rule("indirect_injection", "when_you_read", 0.6,
          rf"\b(?:if|when)\s+(?:you(?:'re| are)?|an? {_AI})\s+(?:reading|read|process|processing|see|summari[sz]e|"
          r"summari[sz]ing|parse|parsing)\s+(?:this|these)\b.{0,80}"
          r"\b(?:ignore|instead|must|do not|don't|tell|say|send)"),
    _rule("indirect_injection", "exfiltrate", 0.8,
          r"\b(?:send|forward|post|upload|email|e-mail|leak|exfiltrate|transmit)\s+(?:all\s+|the\s+|every\s+|any\s+)?"
          r"(?:user'?s?\s+|conversation\s+|chat\s+|private\s+|previous\s+)(?:data|emails?|messages|history|"
          r"credentials|passwords|files|conversation|details|information|secrets)\b.{0,60}\b(?:to|at)\s+"
          r"(?:https?://|\S+@|\S+\.\w{2,})"),
    _rule("indirect_injection", "markdown_exfil", 0.75,
          r"!\[[^\]\n]{0,80}\]\(https?://[^)\s]{1,200}[?&][^)\s]{0,40}=(?:\{|\[|%7b|<)"),
)

# Families for which one match is convincing; the rest need the classifier or a second hit.
FAMILIES = tuple(dict.fromkeys(r.family for r in RULES))


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule: Rule
    start: int
    end: int


# One RE2 pass tells which rules can match; RE2 then finds where, and only there ``re`` confirms.
_GATE = Gate([rule.regex.pattern for rule in RULES])


def rule_hits(lower: str) -> list[RuleHit]:
    """The first hit of every rule in a lower-cased, normalised text."""
    hits = []
    for index, start in _GATE.starts(lower):
        rule = RULES[index]
        m = rule.regex.search(lower, start)
        if m is not None:
            hits.append(RuleHit(rule, m.start(), m.end()))
    return hits


def combine(weights: list[float]) -> float:
    """Noisy-OR of independent pieces of evidence."""
    miss = 1.0
    for w in weights:
        miss *= 1.0 - w
    return 1.0 - miss


def heuristic_score(hits: list[RuleHit]) -> float:
    """Strongest hit per family, combined across families."""
    best: dict[str, float] = {}
    for h in hits:
        best[h.rule.family] = max(best.get(h.rule.family, 0.0), h.rule.weight)
    return combine(list(best.values()))
