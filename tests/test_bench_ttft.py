"""bench/ttft.py: the paired TTFT measurement (servers are faked; no SGLang needed)."""

from types import SimpleNamespace

import pytest

from bench import ttft
from bench.serving import client, prompts


def test_paired_ratio_is_the_median_of_per_request_ratios():
    samples = {"ntp": [[1.0, 2.0, 4.0]], "mtp": [[2.0, 2.0, 5.0]]}
    out = ttft.summarize(samples, "ntp")
    assert out["ntp"]["paired_ratio_p50"] == 1.0
    assert out["mtp"]["paired_ratio_p50"] == pytest.approx(1.25)  # ratios 2, 1, 1.25
    assert out["mtp"]["ttft_p50_ms"] == pytest.approx(2000.0) and out["mtp"]["n"] == 3


def test_every_prompt_goes_to_every_mode_plain_requests_included(monkeypatch):
    sent, flushed = [], []
    monkeypatch.setattr(ttft, "only", lambda servers, spec: None)

    def one(url, payload):
        sent.append((url, payload["text"], payload["sampling_params"].get("custom_params")))
        return client.RequestResult(0, ok=True, ttft=0.5 if url == "ntp" else 1.0)

    monkeypatch.setattr(ttft, "one", one)
    servers = {name: SimpleNamespace(url=name, post=lambda path, n=name: flushed.append(n))
               for name in ("ntp", "conf_adapt:0.9:6", "plain@conf_adapt:0.9:6")}
    payloads = [client.generate_payload(t, 8) for t in ("a", "b")]
    samples = ttft.measure(servers, payloads, 2)
    assert set(samples) == set(servers)
    assert len(sent) == 2 * 2 * 3 and len(flushed) == len(sent)  # the cache is flushed before every request
    plain = [s for s in sent if s[2] is not None]
    assert len(plain) == 4 and all(s[0] == "plain@conf_adapt:0.9:6" and s[2] == {"mtp": False} for s in plain)
    assert all("custom_params" not in p["sampling_params"] for p in payloads)  # payloads not mutated
    assert sent[0][0] != sent[3][0]  # the mode order rotates from one prompt to the next
    assert samples["ntp"] == [[0.5, 0.5], [0.5, 0.5]]


def test_a_plain_mode_gets_a_server_of_its_own(monkeypatch, tmp_path):
    # Sharing its mode's server, a plain@ request was often measured right after that
    # server's own request (warm) while every other server had just been woken: biased.
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _WordTokenizer())
    args = ttft.build_parser().parse_args(["--model", str(tmp_path), "--prompts", "toy", "--out", str(tmp_path),
                                           "--modes", "ntp,conf_adapt:0.9:6,verify:6,plain@conf_adapt:0.9:6"])
    ttft.resolve(args)
    assert args.specs == ["ntp", "conf_adapt:0.9:6", "verify:6", "plain@conf_adapt:0.9:6"]
    assert [m.spec for m in args.mode_list] == ["ntp", "conf_adapt:0.9:6", "verify:6", "conf_adapt:0.9:6"]
    assert args.mode_list[3].server_flags() == args.mode_list[1].server_flags()
    args = ttft.build_parser().parse_args(["--model", str(tmp_path), "--prompts", "toy", "--out", str(tmp_path),
                                           "--modes", "plain@verify:6,ntp"])
    with pytest.raises(ValueError, match="baseline"):
        ttft.resolve(args)


class _WordTokenizer:
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}


def test_prompts_and_their_format_come_from_the_flags_and_their_length_is_recorded(monkeypatch, tmp_path):
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _WordTokenizer())
    args = ttft.build_parser().parse_args(["--model", str(tmp_path), "--prompts", "toy:1", "--num-prompts", "3",
                                           "--modes", "ntp,conf_adapt:0.9:6", "--out", str(tmp_path)])
    ttft.resolve(args)
    longer = prompts.load_prompts("toy:1", 3)
    assert args.texts == [p.text for p in longer]  # the toy's own (raw) format
    assert args.prompt_info == {"source": "toy:1", "format": "raw", "count": 3,
                                "tokens_p50": sorted(len(p.text.split()) for p in longer)[1]}

    f = tmp_path / "mine.jsonl"
    f.write_text('{"prompt": "two plus two"}\n')
    args = ttft.build_parser().parse_args(["--model", str(tmp_path), "--prompts", str(f), "--prompt-format", "qa",
                                           "--modes", "ntp", "--out", str(tmp_path)])
    ttft.resolve(args)
    assert args.texts == [prompts.QA_TEMPLATE.format(prompt="two plus two")]
    assert args.prompt_info["format"] == "qa" and args.prompt_info["count"] == 1


def test_starts_pool_fresh_servers_and_report_each_starts_ratio(monkeypatch, tmp_path):
    # One server per mode carries an offset of its own for as long as it runs (up to 3% on a
    # 2-core CPU, same mode against same mode): --starts N restarts them all N times, with the
    # launch order rotated, and pools the paired ratios.
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _WordTokenizer())
    launched, live = [], {}

    class FakeServer:
        def __init__(self, cmd, port, log, env=None):
            self.url, self.proc, self.log = f"http://{port}", SimpleNamespace(pid=port), log
            live[self.url] = self

        def start(self):
            launched.append((len(launched), self.log.name))

        def wait_healthy(self, timeout):
            pass

        def post(self, path):
            pass

        def stop(self):
            live.pop(self.url)

    ports = iter(range(1000, 2000))
    monkeypatch.setattr(ttft.server, "Server", FakeServer)
    monkeypatch.setattr(ttft.server, "free_port", lambda: next(ports))
    monkeypatch.setattr(ttft, "only", lambda servers, spec: None)
    signals = []
    monkeypatch.setattr(ttft.os, "killpg", lambda pid, sig: signals.append((pid, sig)))
    start_of = lambda: len(launched) // 2 - 1  # two servers per start
    mtp_logs = lambda: [n for _, n in launched[-2:] if n.startswith("conf_adapt")]

    def one(url, payload):
        assert mtp_logs()  # the servers of this start are up
        mtp = live[url].log.name.startswith("conf_adapt")
        return client.RequestResult(0, ok=True, ttft=(1.0 + 0.1 * (1 + start_of())) if mtp else 1.0)

    monkeypatch.setattr(ttft, "one", one)
    out = tmp_path / "out"
    assert ttft.main(["--model", str(tmp_path), "--prompts", "toy", "--num-prompts", "3", "--rounds", "2",
                      "--starts", "3", "--modes", "ntp,conf_adapt:0.9:6", "--out", str(out)]) == 0
    assert not live  # every server stopped
    # each server is paused once healthy (an idle scheduler polls), and woken before it stops
    assert [sig for _, sig in signals] == 3 * (2 * [ttft.signal.SIGSTOP] + 2 * [ttft.signal.SIGCONT])
    names = [n for _, n in launched]
    assert names == ["ntp.start0.log", "conf_adapt_0.9_6.start0.log", "conf_adapt_0.9_6.start1.log",
                     "ntp.start1.log", "ntp.start2.log", "conf_adapt_0.9_6.start2.log"]  # rotated
    import json

    report = json.loads((out / "ttft.json").read_text())
    assert [s["conf_adapt:0.9:6"]["paired_ratio_p50"] for s in report["per_start"]] == pytest.approx([1.1, 1.2, 1.3])
    assert report["summary"]["conf_adapt:0.9:6"]["paired_ratio_p50"] == pytest.approx(1.2)  # pooled
    assert report["summary"]["conf_adapt:0.9:6"]["n"] == 3 * 2 * 3
    assert "1.100, 1.200, 1.300" in (out / "ttft.md").read_text()
    with pytest.raises(ValueError, match="--starts"):
        ttft.main(["--model", str(tmp_path), "--prompts", "toy", "--starts", "0", "--out", str(out)])
