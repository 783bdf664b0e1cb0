"""The real `anthropic` Python SDK against Sluice's `/v1/messages`.

Usage: python anthropic_client.py GATEWAY_URL MOCK_UPSTREAM_URL
Talks to an Anthropic-format provider (passed through), to Claude on Bedrock and
on Vertex AI (passed through in their envelopes), and to an OpenAI-format one
(translated both ways), streaming included; exits 0 and prints "ok", or raises
on the first mismatch.
"""

import sys

import anthropic
from anthropic import Anthropic


def client(base: str, provider: str, upstream: str, key: str = "sk-ant-sdk", **headers: str) -> Anthropic:
    return Anthropic(
        base_url=base,
        api_key=key,
        default_headers={
            "x-portkey-provider": provider,
            "x-portkey-custom-host": upstream,
            **headers,
        },
        max_retries=0,
    )


def claude_elsewhere(sdk: Anthropic, model: str) -> None:
    """Claude behind another cloud's envelope: the same Messages API back."""
    hi = [{"role": "user", "content": "hi"}]
    msg = sdk.messages.create(model=model, max_tokens=64, messages=hi)
    assert msg.content[0].text == "Hello from Claude mock", msg
    assert msg.stop_reason == "end_turn", msg
    with sdk.messages.stream(model=model, max_tokens=64, messages=hi) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello Claude", text
    assert final.usage.output_tokens == 2, final
    count = sdk.messages.count_tokens(model=model, messages=hi)
    assert count.input_tokens > 0, count


def main(base: str, upstream: str) -> None:
    hi = [{"role": "user", "content": "hi"}]

    # Anthropic's own format: passed through.
    claude = client(base, "anthropic", f"{upstream}/v1")
    msg = claude.messages.create(model="claude-sdk", max_tokens=64, system="Be brief.", messages=hi)
    assert msg.content[0].text == "Hello from Claude mock", msg
    assert msg.stop_reason == "end_turn", msg
    with claude.messages.stream(model="claude-sdk", max_tokens=64, messages=hi) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello Claude", text
    assert final.usage.output_tokens == 2, final
    try:
        claude.messages.create(model="fault:status=429", max_tokens=8, messages=hi)
        raise AssertionError("expected a 429")
    except anthropic.RateLimitError as e:
        assert e.status_code == 429

    # An OpenAI-format provider: translated both ways.
    other = client(base, "mock", f"{upstream}/v1")
    msg = other.messages.create(model="gpt-behind-claude-api", max_tokens=64, system="Be brief.", messages=hi)
    assert msg.type == "message" and msg.role == "assistant", msg
    assert msg.content[0].text == "Hello from mock", msg
    assert msg.stop_reason == "end_turn", msg
    assert msg.usage.input_tokens == 5 and msg.usage.output_tokens == 3, msg
    with other.messages.stream(model="gpt-behind-claude-api", max_tokens=64, messages=hi) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok1 tok2 tok3 ", text
    assert final.stop_reason == "end_turn", final
    try:
        other.messages.create(model="fault:status=429", max_tokens=8, messages=hi)
        raise AssertionError("expected a 429")
    except anthropic.RateLimitError as e:
        assert e.status_code == 429

    # Claude on Bedrock (InvokeModel) and on Vertex AI (rawPredict).
    bedrock = client(
        base,
        "bedrock",
        upstream,
        **{"x-portkey-aws-access-key-id": "AKIDSDK", "x-portkey-aws-secret-access-key": "s"},
    )
    claude_elsewhere(bedrock, "anthropic.claude-3-5-haiku-20241022-v1:0")
    vertex = client(base, "vertex-ai", upstream, key="ya29.sdk", **{"x-portkey-vertex-project-id": "sdk"})
    claude_elsewhere(vertex, "claude-sonnet-4@20250514")

    # The gateway's own errors come in Anthropic's shape too.
    bare = Anthropic(base_url=base, api_key="k", max_retries=0)
    try:
        bare.messages.create(model="m", max_tokens=8, messages=hi)
        raise AssertionError("expected a 400")
    except anthropic.BadRequestError as e:
        assert e.body["type"] == "error", e.body
        assert "no provider given" in e.body["error"]["message"], e.body

    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
