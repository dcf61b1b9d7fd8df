#!/usr/bin/env python3
"""Legacy text completions as a real client sees them, through the official `openai` client.

usage: python3 openai_completions.py BASE_URL [MODEL] [PROMPT_WORDS]

BASE_URL is an OpenAI-compatible base such as http://127.0.0.1:PORT/v1. The prompt is
PROMPT_WORDS words (default 6000: longer than Ollama's default context of 4096, so
`usage.prompt_tokens` shows whether the prompt was cut). The script asks for the same
completion streamed (with `stream_options.include_usage`) and not, and for a short one
cut by `max_tokens`, and prints one JSON object on stdout:
{"streamed": {"text", "finish_reason", "usage", "objects", "ids"},
 "whole": {"text", "finish_reason", "usage", "object", "id"},
 "short": {"text", "finish_reason"}}.

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


def main() -> None:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    base_url = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else "qwen2.5:7b"
    words = int(sys.argv[3]) if len(sys.argv) > 3 else 6000
    prompt = "word " * words + "Continue the story:"
    client = openai.OpenAI(base_url=base_url, api_key="sandbox", max_retries=0, timeout=60)

    stream = client.completions.create(
        model=model,
        prompt=prompt,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.2,
        stop=["THE END"],
    )
    text = ""
    finish = None
    usage = None
    objects = set()
    ids = set()
    for chunk in stream:
        objects.add(chunk.object)
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(exclude_none=True)
        for choice in chunk.choices:
            text += choice.text or ""
            if choice.finish_reason:
                finish = choice.finish_reason
    streamed = {
        "text": text,
        "finish_reason": finish,
        "usage": usage,
        "objects": sorted(objects),
        "ids": len(ids),
    }

    whole = client.completions.create(model=model, prompt=prompt, seed=7)
    choice = whole.choices[0]
    whole_out = {
        "text": choice.text,
        "finish_reason": choice.finish_reason,
        "usage": whole.usage.model_dump(exclude_none=True) if whole.usage else None,
        "object": whole.object,
        "id": whole.id,
    }

    short = client.completions.create(model=model, prompt="Once upon a time", max_tokens=2)
    short_out = {"text": short.choices[0].text, "finish_reason": short.choices[0].finish_reason}

    print(json.dumps({"streamed": streamed, "whole": whole_out, "short": short_out}))


if __name__ == "__main__":
    main()
