"""A provider-neutral tool-using agent for the Meta-Agent and Feedback-Agent roles.

An LLM backend supplies a small :class:`ModelAdapter` (send the conversation and the tool
definitions, get back text, tool calls and usage); everything else is shared here:

- ``protocol``: :class:`ModelAdapter`, :class:`ToolSpec`, :class:`ToolCall`, :class:`Turn`
  (what an adapter sends and returns) and :class:`AgentLimits`.
- ``workspace``: :class:`Workspace`, the files of the run the agent may read, by an allowlist.
- ``tools``: :class:`AgentTools`: ``list_files``, ``read_file``, ``write_scaffold``,
  ``test_scaffold`` and ``decide``.
- ``turns``: :func:`run_agent`, the turn loop with limits on turns and tokens, and its
  transcript (saved as ``gen_N/agent_transcript.json``).
- ``prompts``: the system prompt, each role's brief and :func:`feedback_prompt`.
- ``roles``: :func:`meta_step` / :func:`feedback_step`: prompts, tools, loop and the resulting
  :class:`~sia_core.contracts.backend.AgentOutcome`.

Import the names from here (``from sia_core.services.agents import meta_step``).
"""

from __future__ import annotations

from sia_core.services.agents.prompts import (
    FEEDBACK_TEXT,
    META_TEXT,
    SYSTEM,
    clip_text,
    dev_summary,
    feedback_prompt,
)
from sia_core.services.agents.protocol import (
    AgentLimits,
    ModelAdapter,
    ToolCall,
    ToolError,
    ToolSpec,
    Turn,
)
from sia_core.services.agents.roles import (
    feedback_outcome,
    feedback_step,
    feedback_tools,
    meta_outcome,
    meta_step,
    meta_tools,
)
from sia_core.services.agents.tools import MAX_LISTED, AgentTools
from sia_core.services.agents.turns import TRUNCATED, USAGE_KEYS, AgentRun, run_agent, usage_total
from sia_core.services.agents.workspace import FORBIDDEN_PARTS, GEN_FILES, RUN_FILES, Workspace

__all__ = [
    "FEEDBACK_TEXT",
    "FORBIDDEN_PARTS",
    "GEN_FILES",
    "MAX_LISTED",
    "META_TEXT",
    "RUN_FILES",
    "SYSTEM",
    "TRUNCATED",
    "USAGE_KEYS",
    "AgentLimits",
    "AgentRun",
    "AgentTools",
    "ModelAdapter",
    "ToolCall",
    "ToolError",
    "ToolSpec",
    "Turn",
    "Workspace",
    "clip_text",
    "dev_summary",
    "feedback_outcome",
    "feedback_prompt",
    "feedback_step",
    "feedback_tools",
    "meta_outcome",
    "meta_step",
    "meta_tools",
    "run_agent",
    "usage_total",
]
