"""The AI assistant: summaries, reply drafts and triage (DESIGN.md promise 10, `ai-byok`).

Split by process: `runner.py`, `providers.py`, `offline.py`, `redaction.py`, `prompts.py` and
`tasks.py` run in worker-ai (queue `ai`), which alone holds the ai lease key and the platform key;
`services.py` and `selectors.py` are the web side (queue a request, read a result). Model output is
data: it is stored encrypted, shown as escaped text, and never triggers an action.
"""
