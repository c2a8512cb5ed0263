"""A real `kt serve` subprocess on 127.0.0.1, driven by the official openai client."""
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2_path, tmp_path_factory):
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "kt.cli", "serve", str(smollm2_path), "--port", str(port),
                             "--served-name", "smol"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"kt serve exited: {log.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        pytest.fail("kt serve did not become healthy in 120 s")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["smol"]


def test_stream_and_whole_agree_with_python_api(client, smollm2_llm):
    whole = client.chat.completions.create(model="smol", messages=MESSAGES, temperature=0, max_tokens=40)
    chunks = list(client.chat.completions.create(model="smol", messages=MESSAGES, temperature=0, max_tokens=40,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reference = smollm2_llm.chat(MESSAGES, temperature=0.0, max_tokens=40)

    assert whole.choices[0].message.content == streamed == reference.text
    assert len(reference.text) > 20
    assert whole.choices[0].finish_reason == reference.finish_reason.value
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [reference.finish_reason.value]
    usage = chunks[-1].usage
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == \
        (usage.prompt_tokens, usage.completion_tokens) == (reference.prompt_tokens, reference.completion_tokens)
    assert whole.usage.prompt_tokens == len(smollm2_llm.render_chat(MESSAGES))
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_stop_string_cuts_the_text(client):
    full = client.chat.completions.create(model="smol", messages=MESSAGES, temperature=0, max_tokens=40)
    text = full.choices[0].message.content
    stop = text.split()[3]
    cut = client.chat.completions.create(model="smol", messages=MESSAGES, temperature=0, max_tokens=40, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_max_tokens_gives_length(client):
    out = client.chat.completions.create(model="smol", messages=MESSAGES, temperature=0, max_tokens=3)
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 3


def test_seeded_sampling_repeats(client):
    kwargs = dict(model="smol", messages=MESSAGES, temperature=0.9, top_p=0.9, max_tokens=20)
    a = client.chat.completions.create(seed=7, **kwargs).choices[0].message.content
    b = client.chat.completions.create(seed=7, **kwargs).choices[0].message.content
    assert a == b


def test_bad_requests_are_openai_errors(client, server):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smol", messages=[], max_tokens=5)
    assert err.value.body["message"]
    bad = httpx.post(f"{server}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and set(bad.json()["error"]) == {"message", "type", "param", "code"}
    wrong_role = httpx.post(f"{server}/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]})
    assert wrong_role.status_code == 400
    absurd = httpx.post(f"{server}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 10**9})
    assert absurd.status_code == 400 and "max_tokens" in absurd.json()["error"]["message"]
    too_long = httpx.post(f"{server}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "hello " * 9000}]})
    assert too_long.status_code == 400 and "8192" in too_long.json()["error"]["message"]


def test_event_loop_stays_free_during_generation(client, server):
    """/health answers quickly while a long generation runs."""
    worker = threading.Thread(target=lambda: client.chat.completions.create(
        model="smol", messages=MESSAGES, max_tokens=400, temperature=0.8, seed=1, extra_body={"ignore_eos": True}))
    worker.start()
    time.sleep(0.3)  # into the generation: 400 tokens take seconds even at 200 tok/s
    started = time.perf_counter()
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200
    elapsed = time.perf_counter() - started
    still_generating = worker.is_alive()
    worker.join()
    assert still_generating, "the generation finished too fast to show anything"
    assert elapsed < 0.5, f"/health took {elapsed:.2f}s while generating"


def test_raw_sse_ends_with_done(server):
    body = {"messages": MESSAGES, "max_tokens": 5, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert '"finish_reason": "length"' in events[-2]
