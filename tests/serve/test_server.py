"""``vlmtune serve`` as a user runs it: a subprocess serving a tiny Qwen2.5-VL with two adapters, called with the
official ``openai`` client. Greedy answers are ``vlmtune predict``'s, token for token."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest
from PIL import Image

from tests.export.ecosystem import MAX_NEW_TOKENS, PROMPT, vlmtune_predict
from tests.serve.server import API_KEY, Server, data_uri, make_runs

pytestmark = pytest.mark.slow  # a `vlmtune serve` subprocess with two adapters


@pytest.fixture(scope="module")
def served(tiny_dir, tmp_path_factory):
    """The server (base + adapters ``a`` and ``run_b``), its folders and images."""
    root = tmp_path_factory.mktemp("serve")
    base = tiny_dir("qwen2_5_vl")
    run_a, run_b = make_runs(base, root)
    local = root / "local"
    local.mkdir()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(local / "red.png")
    Image.new("RGB", (40, 40), (0, 0, 255)).save(root / "outside.png")
    (local / "link.png").symlink_to(root / "outside.png")
    server = Server(["--model", str(base), "--adapter", f"a={run_a / 'adapter'}", "--adapter", str(run_b / "adapter"),
                     "--allow-local-files", str(local)], root / "server.log")
    yield {"server": server, "base": base, "run_a": run_a, "run_b": run_b, "local": local, "root": root,
           "image": local / "red.png"}
    server.stop()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served['server'].url}/v1", api_key=API_KEY, max_retries=0)


def image_messages(url: str, text: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def ask(client, model: str, messages: list[dict], **kwargs):
    return client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_NEW_TOKENS, **kwargs)


def test_startup_says_backend_and_names(served):
    lines = served["server"].output().splitlines()
    assert "backend: transformers (vllm is not installed)" in lines
    assert f"serving {served['base'].name}, a, run_b at {served['server'].url}/v1 (API key required)" in lines


def test_models_lists_base_then_adapters(served, client):
    assert [m.id for m in client.models.list().data] == [served["base"].name, "a", "run_b"]


@pytest.mark.parametrize("name", ["base", "a", "run_b"])
def test_image_answer_equals_predict(served, client, capsys, name):
    image = served["image"]
    model = {"base": served["base"].name}.get(name, name)
    reply = ask(client, model, image_messages(data_uri(image)))
    # The base follows the first adapter's run config, as `vlmtune eval` compares base and tuned on one config;
    # --model says to answer with the base rather than the run's weights.
    args = {"base": ["--config", str(served["run_a"] / "config.yaml"), "--model", str(served["base"])],
            "a": ["--adapter", str(served["run_a"] / "adapter")],
            "run_b": ["--adapter", str(served["run_b"] / "adapter")]}[name]
    expected = vlmtune_predict(capsys, image, *args)
    choice = reply.choices[0]
    assert choice.message.content == expected
    assert (choice.message.role, reply.model, reply.object) == ("assistant", model, "chat.completion")
    # The tiny model does not end its turn within MAX_NEW_TOKENS tokens.
    assert (choice.finish_reason, reply.usage.completion_tokens) == ("length", MAX_NEW_TOKENS)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + MAX_NEW_TOKENS


def test_adapters_and_base_answer_differently(served, client):
    messages = image_messages(data_uri(served["image"]))
    answers = {m: ask(client, m, messages).choices[0].message.content for m in (served["base"].name, "a", "run_b")}
    assert len(set(answers.values())) == 3, answers


def test_stream_joins_to_the_plain_answer(served, client):
    messages = image_messages(data_uri(served["image"]))
    plain = ask(client, "a", messages).choices[0].message.content
    chunks = list(ask(client, "a", messages, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) > 1  # really piece by piece
    assert (chunks[-1].choices, chunks[-1].usage.completion_tokens) == ([], MAX_NEW_TOKENS)
    assert len({c.id for c in chunks}) == 1


def test_stream_ends_with_done(served):
    body = {"model": "a", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{served['server'].url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as r:
        events = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-1])


def test_stop_string_cuts_plain_and_streamed_answers(served, client):
    messages = image_messages(data_uri(served["image"]))
    full = ask(client, "a", messages).choices[0].message.content
    stop = full[5:7]
    expected = full[:full.index(stop)].rstrip()
    reply = ask(client, "a", messages, stop=[stop])
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == (expected, "stop")
    streamed = ask(client, "a", messages, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_sampling_with_a_seed_repeats(served, client):
    messages = image_messages(data_uri(served["image"]))
    greedy = ask(client, "a", messages).choices[0].message.content
    first, second = (ask(client, "a", messages, temperature=1.0, seed=7).choices[0].message.content
                     for _ in range(2))
    assert first == second
    assert first != greedy


def test_concurrent_requests_are_batched_with_the_same_answers(served, client):
    prompts = [(f"{PROMPT} " * (1 + i)).strip() for i in range(8)]
    messages = [image_messages(data_uri(served["image"]), p) if i % 2 else [{"role": "user", "content": p}]
                for i, p in enumerate(prompts)]
    alone = [ask(client, "a", m).choices[0].message.content for m in messages]
    before = httpx.get(f"{served['server'].url}/stats", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    together: dict[int, str] = {}
    barrier = threading.Barrier(len(messages))

    def call(i: int) -> None:
        barrier.wait()
        together[i] = ask(client, "a", messages[i]).choices[0].message.content

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(messages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = httpx.get(f"{served['server'].url}/stats", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert [together[i] for i in range(len(messages))] == alone
    new = {int(k): v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    assert sum(size * n for size, n in new.items()) == len(messages)
    assert max(size for size, n in new.items() if n) > 1, new


def test_local_files_inside_the_allowed_folder(served, client):
    by_data = ask(client, "a", image_messages(data_uri(served["image"]))).choices[0].message.content
    for url in (served["image"].as_uri(), str(served["image"]), "red.png"):
        assert ask(client, "a", image_messages(url)).choices[0].message.content == by_data, url


@pytest.mark.parametrize("where", ["outside", "symlink", "dotdot"])
def test_local_files_outside_the_allowed_folder_are_refused(served, client, where):
    url = {"outside": (served["root"] / "outside.png").as_uri(), "symlink": str(served["local"] / "link.png"),
           "dotdot": "../outside.png"}[where]
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, "a", image_messages(url))
    assert e.value.status_code == 400
    assert e.value.body["param"] == "messages[0].content[0].image_url"
    assert "outside the folder allowed for local files" in e.value.body["message"]


LONG = "word " * 200
BAD = {
    "unknown model": ({"model": "nope", "messages": [{"role": "user", "content": "Hi"}]}, "model",
                      "model 'nope' is not served here; served: {base}, a, run_b"),
    "no text": ({"model": "a", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "IMAGE"}}]}]}, "messages",
        "messages: no text in the messages; add a text part with the question"),
    "undecodable image": ({"model": "a", "messages": image_messages("data:image/png;base64,aGVsbG8=")},
                          "messages[0].content[0].image_url", "messages[0].content[0].image_url: cannot decode"),
    "http image": ({"model": "a", "messages": image_messages("https://example.com/cat.png")},
                   "messages[0].content[0].image_url",
                   "messages[0].content[0].image_url: images are not fetched from the network"),
    "prompt too long": ({"model": "run_b", "messages": [{"role": "user", "content": LONG}]}, "messages",
                        "messages: the prompt is"),
    "too many images": ({"model": "run_b", "messages": [{"role": "user", "content": [
        *[{"type": "image_url", "image_url": {"url": "IMAGE"}}] * 20, {"type": "text", "text": "Hi"}]}]},
        "messages", "messages: the prompt is 142 tokens (20 image(s)), over this model's context of 96 tokens "
        "(data.max_length)"),
    "n": ({"model": "a", "messages": [{"role": "user", "content": "Hi"}], "n": 2}, "n", "n: only 1 is supported"),
    "max_tokens": ({"model": "a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 0}, "max_tokens",
                   "max_tokens: expected a positive integer, got 0"),
    "temperature": ({"model": "a", "messages": [{"role": "user", "content": "Hi"}], "temperature": 5},
                    "temperature", "temperature: expected a number from 0 to 2, got 5"),
    "role": ({"model": "a", "messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role",
             "messages[0].role: expected one of"),
    "malformed body": ("{not json", None, "the body is not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_names_the_field_and_the_server_keeps_serving(served, client, case):
    body, param, message = BAD[case]
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    if isinstance(body, dict):
        body = httpx.Request("POST", "/", json=body).content.decode().replace("IMAGE", data_uri(served["image"]))
    r = httpx.post(f"{served['server'].url}/v1/chat/completions", content=body, headers=headers, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, None)
    assert error["message"].startswith(message.format(base=served["base"].name)), error["message"]
    assert "\n" not in error["message"]
    reply = client.chat.completions.create(model="a", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert reply.usage.completion_tokens == 2


def test_unknown_model_through_the_client(served, client):
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, "gpt-4o", [{"role": "user", "content": "Hi"}])
    assert e.value.body == {"message": f"model 'gpt-4o' is not served here; served: {served['base'].name}, a, run_b",
                            "type": "invalid_request_error", "param": "model", "code": None}


@pytest.mark.parametrize("key", [None, "wrong"])
def test_api_key_is_required(served, key):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
        r = httpx.request(method, f"{served['server'].url}{path}", headers=headers, timeout=30,
                          json={"model": "a", "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=f"{served['server'].url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
