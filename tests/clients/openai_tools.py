#!/usr/bin/env python3
"""Streamed tool calls as a real agent sees them, through the official `openai` client.

usage: python3 openai_tools.py BASE_URL [MODEL]

BASE_URL is an OpenAI-compatible base such as http://127.0.0.1:PORT/v1. The script asks
for a streamed chat completion offering two tools, assembles the tool calls from the
deltas the way agents do (by `index`), and prints one JSON object on stdout:
{"calls": [{"index", "id", "name", "arguments"}], "content", "finish_reason", "usage"}.
Arguments that are not valid JSON are reported as {"_unparsed": "<text>"}.

Exit status 3 when the `openai` module is missing (the Rust test turns that into a
failure telling you to run the tests with ./scripts/test).
"""

import json
import sys

try:
    import openai
except ImportError:
    print(
        "the `openai` Python module is missing: run the tests with ./scripts/test (it installs tests/clients/requirements.txt into tests/clients/.venv)",
        file=sys.stderr,
    )
    sys.exit(3)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a timezone",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string", "enum": ["UTC", "CET"]}},
                "required": ["timezone"],
            },
        },
    },
]


def main() -> None:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    base_url = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else "qwen2.5:7b"
    client = openai.OpenAI(base_url=base_url, api_key="sandbox", max_retries=0, timeout=60)
    stream = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are a helpful assistant. Use the tools."},
            {"role": "user", "content": "What is the weather and the time in Paris?"},
        ],
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    calls = {}
    content = ""
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                content += delta.content
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                finish = choice.finish_reason
    out = []
    for index in sorted(calls):
        c = calls[index]
        try:
            args = json.loads(c["arguments"])
        except ValueError:
            args = {"_unparsed": c["arguments"]}
        out.append({"index": index, "id": c["id"], "name": c["name"], "arguments": args})
    print(json.dumps({"calls": out, "content": content, "finish_reason": finish, "usage": usage}))


if __name__ == "__main__":
    main()
