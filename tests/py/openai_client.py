"""The real `openai` Python SDK against a running Sluice gateway.

Usage: python openai_client.py GATEWAY_URL MOCK_UPSTREAM_URL
Exits 0 and prints "ok" when chat, streaming chat, embeddings and models all work;
raises (exit 1) on the first mismatch.
"""

import sys

import openai
from openai import OpenAI


def main(base: str, upstream: str) -> None:
    client = OpenAI(
        base_url=f"{base}/v1",
        api_key="sk-python-sdk",
        default_headers={"x-portkey-provider": "mock"},
        max_retries=0,
    )

    chat = client.chat.completions.create(
        model="gpt-sdk",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"future_param": {"a": 1}},
    )
    assert chat.choices[0].message.content == "Hello from mock", chat
    assert chat.model == "gpt-sdk", chat
    assert chat.usage.total_tokens == 8, chat

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-sdk", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers.get("x-portkey-provider") == "mock", raw.headers
    assert raw.headers.get("x-portkey-trace-id"), raw.headers

    pieces = []
    finish = None
    for chunk in client.chat.completions.create(
        model="gpt-sdk", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == "tok1 tok2 tok3 ", pieces
    assert finish == "stop", finish

    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and emb.data[1].index == 1, emb
    assert emb.data[0].embedding == [0.1, -0.2, 0.3], emb

    models = client.models.list()
    assert [m.id for m in models.data] == ["mock-model", "mock-embed"], models

    # Errors reach the SDK as its own exception types, with the gateway's shape.
    try:
        client.chat.completions.create(model="fault:status=429", messages=[])
        raise AssertionError("expected a 429")
    except openai.RateLimitError as e:
        assert e.status_code == 429

    bad = OpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0)
    try:
        bad.chat.completions.create(model="m", messages=[])
        raise AssertionError("expected a 400")
    except openai.BadRequestError as e:
        assert e.body["code"] == "missing_provider", e.body

    # A stream that breaks mid-way surfaces as an APIError in the SDK.
    try:
        for _ in client.chat.completions.create(model="fault:cut", messages=[], stream=True):
            pass
        raise AssertionError("expected the broken stream to raise")
    except openai.APIError as e:
        assert "broke" in str(e), e

    # The Responses API, translated over chat completions for this provider.
    resp = client.responses.create(model="gpt-sdk", instructions="Be brief.", input="hi")
    assert resp.output_text == "Hello from mock", resp
    assert resp.status == "completed" and resp.usage.total_tokens == 8, resp
    text, done = "", None
    for event in client.responses.create(model="gpt-sdk", input="hi", stream=True):
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            done = event.response
    assert text == "tok1 tok2 tok3 ", text
    assert done is not None and done.output_text == "tok1 tok2 tok3 ", done

    # A native adapter: the same SDK against Anthropic's Messages API (the mock
    # speaks it at the custom host).
    claude = OpenAI(
        base_url=f"{base}/v1",
        api_key="sk-ant-sdk",
        default_headers={
            "x-portkey-provider": "anthropic",
            "x-portkey-custom-host": f"{upstream}/v1",
        },
        max_retries=0,
    )
    chat = claude.chat.completions.create(
        model="claude-sdk", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    assert chat.choices[0].message.content == "Hello from Claude mock", chat
    assert chat.choices[0].finish_reason == "stop", chat
    assert chat.usage.prompt_tokens == 12 and chat.usage.completion_tokens == 5, chat
    text, usage = "", None
    for chunk in claude.chat.completions.create(
        model="claude-sdk",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello Claude", text
    assert usage is not None and usage.total_tokens == 14, usage
    try:
        claude.chat.completions.create(model="fault:status=429", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected a 429")
    except openai.RateLimitError as e:
        assert e.status_code == 429

    # Every other native adapter: the same SDK calls, each provider's wire
    # format behind them (the mock speaks them all at the custom host).
    natives = [
        ("google", "/v1beta", "gemini-sdk", "sk-python-sdk", {}, "Gemini"),
        ("cohere", "/v2", "command-sdk", "sk-python-sdk", {}, "Cohere"),
        (
            "bedrock",
            "",
            "amazon.nova-sdk",
            "unused",
            {"x-portkey-aws-access-key-id": "AKIDSDK", "x-portkey-aws-secret-access-key": "s"},
            "Bedrock",
        ),
        ("vertex-ai", "", "gemini-sdk", "ya29.sdk", {"x-portkey-vertex-project-id": "sdk"}, "Gemini"),
        ("vertex-ai", "", "anthropic.claude-sdk", "ya29.sdk", {"x-portkey-vertex-project-id": "sdk"}, "Claude"),
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    for provider, path, model, key, headers, name in natives:
        sdk = OpenAI(
            base_url=f"{base}/v1",
            api_key=key,
            default_headers={"x-portkey-provider": provider, "x-portkey-custom-host": f"{upstream}{path}", **headers},
            max_retries=0,
        )
        hi = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
        chat = sdk.chat.completions.create(model=model, messages=hi)
        # (Bedrock's mock echoes the system prompt after its answer.)
        assert chat.choices[0].message.content.startswith(f"Hello from {name} mock"), (provider, chat)
        assert chat.choices[0].finish_reason == "stop", (provider, chat)
        assert chat.usage.total_tokens > 0, (provider, chat)
        text, usage = "", None
        for chunk in sdk.chat.completions.create(
            model=model, messages=hi, stream=True, stream_options={"include_usage": True}
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
        assert text == f"Hello {name}", (provider, text)
        assert usage is not None and usage.total_tokens > 0, (provider, usage)
        called = sdk.chat.completions.create(model=model, messages=hi, tools=tools)
        call = called.choices[0].message.tool_calls[0]
        assert call.function.name == "lookup" and call.function.arguments == '{"q":"x"}', (provider, called)
        assert called.choices[0].finish_reason == "tool_calls", (provider, called)

    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
