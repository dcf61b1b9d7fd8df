#!/usr/bin/env python3
"""Tool calls a small model printed as text, as real Python agents see them through the
bridge (tool-call salvage), run inside the sandbox.

usage: python3 salvage.py MODEL

For each form the test double can print (it reads `form=NAME` in the prompt), asks once
with the `ollama` package (`chat(..., tools=..., stream=True)`, calls collected from
every chunk) and once with the `openai` package (streamed, calls assembled by `index`),
and prints one JSON object: {"ollama": {FORM: {"content", "calls"}}, "openai": {FORM:
{"content", "calls", "finish_reason"}}}, calls as [{"name", "arguments"}].
"""
import json
import os
import sys

try:
    import ollama
    import openai
except ImportError:
    sys.exit("a client is missing: python3 -m pip install -r tests/clients/requirements.txt")

FORMS = ["bare", "fenced", "tagged", "python_tag", "pythonic"]
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Current time in a timezone",
        "parameters": {"type": "object",
                       "properties": {"timezone": {"type": "string", "enum": ["UTC", "CET"]}},
                       "required": ["timezone"]}}},
]

model = sys.argv[1]
host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434")
base = host if host.startswith("http") else "http://" + host
native = ollama.Client()
oai = openai.OpenAI(base_url=base + "/v1", api_key="sandbox", max_retries=0, timeout=60)
out = {"ollama": {}, "openai": {}}

for form in FORMS:
    messages = [{"role": "user", "content": f"Weather and time in Paris? form={form}"}]
    content, calls = "", []
    for part in native.chat(model=model, messages=messages, tools=TOOLS, stream=True):
        content += part.message.content or ""
        for c in part.message.tool_calls or []:
            calls.append({"name": c.function.name, "arguments": dict(c.function.arguments)})
    out["ollama"][form] = {"content": content, "calls": calls}

    slots, content, finish = {}, "", None
    for chunk in oai.chat.completions.create(model=model, messages=messages, tools=TOOLS,
                                             stream=True):
        for choice in chunk.choices:
            if choice.delta.content:
                content += choice.delta.content
            for tc in choice.delta.tool_calls or []:
                s = slots.setdefault(tc.index, {"name": "", "arguments": ""})
                if tc.function is not None:
                    s["name"] += tc.function.name or ""
                    s["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                finish = choice.finish_reason
    calls = [{"name": slots[i]["name"], "arguments": json.loads(slots[i]["arguments"])}
             for i in sorted(slots)]
    out["openai"][form] = {"content": content, "calls": calls, "finish_reason": finish}

print(json.dumps(out))
