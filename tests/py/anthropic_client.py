"""The real `anthropic` Python SDK against Sluice's `/v1/messages`.

Usage: python anthropic_client.py GATEWAY_URL MOCK_UPSTREAM_URL
Talks to an Anthropic-format provider (passed through) and to an OpenAI-format
one (translated both ways), streaming included; exits 0 and prints "ok", or
raises on the first mismatch.
"""

import sys

import anthropic
from anthropic import Anthropic


def client(base: str, provider: str, upstream: str) -> Anthropic:
    return Anthropic(
        base_url=base,
        api_key="sk-ant-sdk",
        default_headers={
            "x-portkey-provider": provider,
            "x-portkey-custom-host": f"{upstream}/v1",
        },
        max_retries=0,
    )


def main(base: str, upstream: str) -> None:
    hi = [{"role": "user", "content": "hi"}]

    # Anthropic's own format: passed through.
    claude = client(base, "anthropic", upstream)
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
    other = client(base, "mock", upstream)
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
