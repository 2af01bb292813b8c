"""A test backend whose models sit behind OpenAI-compatible servers (the tests' stubs).

``--backend stub-http`` with ``--backend-opt``: ``url`` (the task model's API root, required),
``meta_url`` (the Meta/Feedback model's; without it the scaffold is kept), ``timeout_s`` (both
clients'). The Meta/Feedback roles ask their model for the next scaffold and use the first
```python block of the reply, or else the whole reply, as a naive LLM backend would.
"""

import re

from sia_core import hookimpl
from sia_core.contracts.backend import AgentOutcome
from sia_core.contracts.records import BackendSpec, Decision
from sia_core.services.gateway import HTTPTaskModel

FENCE = re.compile(r"```(?:python)?\n(.*?)```", re.S)


class StubBackend:
    name = "stub-http"

    def __init__(self, options):
        settings = options.settings
        timeout = float(settings.get("timeout_s", 2))
        self._task = HTTPTaskModel(settings["url"], "stub-task", timeout_s=timeout)
        meta_url = settings.get("meta_url")
        self._meta = HTTPTaskModel(meta_url, "stub-meta", timeout_s=timeout) if meta_url else None

    def _ask(self, prompt, role, gen, parent_gen):
        scaffold, transcript = None, [{"role": "user", "content": prompt}]
        if self._meta is not None:
            resp = self._meta.chat({"messages": [{"role": "user", "content": prompt}]})
            text = resp["choices"][0]["message"]["content"] or ""
            transcript.append({"role": "assistant", "content": text})
            match = FENCE.search(text)
            scaffold = match.group(1) if match else text
        return AgentOutcome(
            decision=Decision(
                lever="harness", source=role, parent_gen=parent_gen, rationale=f"{role} {gen}"
            ),
            improvement_md=f"Generation {gen} by the stub {role} model.\n",
            scaffold=scaffold,
            transcript=tuple(transcript),
        )

    def meta(self, request):
        prompt = f"Write generation 1's scaffold.\n\n{request.reference_scaffold}"
        return self._ask(prompt, "meta", 1, None)

    def feedback(self, request):
        prompt = (
            f"Improve the scaffold for generation {request.next_gen}.\n\n{request.parent_scaffold}"
        )
        return self._ask(prompt, "feedback", request.next_gen, request.parent_gen)

    def task_model(self):
        return self._task

    def close(self):
        self._task.close()
        if self._meta is not None:
            self._meta.close()


@hookimpl
def sia_backends():
    yield BackendSpec(name="stub-http", factory="sia_test_stub_backend:StubBackend")
