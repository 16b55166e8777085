"""Generated SQL must be one read-only statement over allowed tables (parsed with sqlglot)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

import sqlglot
from pydantic import Field
from sqlglot import exp
from sqlglot.errors import ParseError

from irl_extproc.conversation import Conversation, Source
from irl_extproc.invariants.base import Action, CheckContext, Finding
from irl_extproc.invariants.common import ScopedConfig, scoped_texts, unredactable

# SQL inside a fenced block, or the whole text when it has no fence (project-written, linear).
_FENCE = re.compile(r"```(?:sql|postgres|postgresql|mysql|sqlite)?[ \t]*\n(.*?)```", re.IGNORECASE | re.DOTALL)
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.TruncateTable,
           exp.Command, exp.Grant, exp.Set, exp.Use, exp.Copy, exp.Into, exp.LoadData, exp.Transaction,
           exp.Commit, exp.Rollback)
# Functions with side effects or server access, even inside a SELECT.
_DENIED_FUNCTIONS = frozenset({
    "pg_sleep", "pg_terminate_backend", "pg_cancel_backend", "pg_read_file", "pg_read_binary_file", "pg_ls_dir",
    "lo_import", "lo_export", "dblink", "dblink_exec", "nextval", "setval", "set_config", "load_file", "sleep",
    "benchmark", "xp_cmdshell", "sys_exec", "sys_eval",
})


class SqlConfig(ScopedConfig):
    name: ClassVar[str] = "sql"
    sources: list[Source] | None = Field(["assistant", "tool_call"], min_length=1,  # type: ignore[assignment]
                                         description="parts holding generated SQL")
    dialect: Literal["ansi", "postgres", "mysql", "sqlite", "bigquery", "snowflake", "tsql", "duckdb"] = "postgres"
    allowed_tables: list[str] | None = Field(
        None, description="tables the query may read (case-insensitive; schema.table or table); omit for any"
    )
    tools: list[str] | None = Field(None, description="for tool calls: only these tools' arguments")
    action: Action = "block"


class Sql:
    whole_response = True  # judged on the complete text: a stream is checked at its end (docs/streaming.md)

    def __init__(self, config: SqlConfig) -> None:
        self.config = config
        self._dialect = "" if config.dialect == "ansi" else config.dialect
        self._allowed = {t.lower() for t in config.allowed_tables} if config.allowed_tables is not None else None

    def _finding(self, index: int, rule: str, message: str) -> Finding:
        return Finding(self.config.name, f"sql.{rule}", unredactable(self.config.action), message,
                       layer="validator", segment=index)

    def problems(self, sql: str) -> list[tuple[str, str]]:
        """(rule, message) for each way this SQL breaks the policy; [] when it is fine."""
        try:
            statements = [s for s in sqlglot.parse(sql, read=self._dialect or None) if s is not None]
        except ParseError:
            return [("unparsable", "SQL could not be parsed")]
        if len(statements) != 1:
            return [("multiple_statements", f"{len(statements)} statements; exactly one is allowed")]
        tree = statements[0]
        writes = sorted({type(node).__name__ for node in tree.walk() if isinstance(node, _WRITES)})
        if writes or not isinstance(tree, (exp.Query, exp.Describe)):
            return [("not_read_only", f"statement is not read-only ({', '.join(writes) or type(tree).__name__})")]
        called = {(node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
                  for node in tree.find_all(exp.Func)}
        if denied := sorted(called & _DENIED_FUNCTIONS):
            return [("function_not_allowed", f"calls functions with side effects: {', '.join(denied)}")]
        if self._allowed is None:
            return []
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        outside = sorted({
            name for table in tree.find_all(exp.Table)
            if (name := ".".join(p for p in (table.db, table.name) if p).lower()) not in ctes
            and name not in self._allowed and table.name.lower() not in self._allowed
        })
        # Count only: table names come from model output, and findings never carry content.
        return [("table_not_allowed", f"reads {len(outside)} table(s) outside allowed_tables")] if outside else []

    def check(self, conversation: Conversation, context: CheckContext) -> list[Finding]:
        findings = []
        segments = scoped_texts(conversation, self.config.sources)
        if self.config.tools is not None:
            segments = [(i, s) for i, s in segments if s.source != "tool_call" or s.name in self.config.tools]
        for index, segment in segments:
            blocks = _FENCE.findall(segment.text)
            if not blocks and segment.source == "assistant":
                continue  # prose without a SQL block is not SQL
            for sql in blocks or [segment.text]:
                findings += [self._finding(index, rule, message) for rule, message in self.problems(sql)]
        return findings
