"""Prometheus metrics (docs/metrics.md) of a real bridge on loopback: requests made with real clients,
`/metrics` scraped and parsed with the library's own parser, counts asserted exactly."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import MODEL_LABEL_LIMIT, error_code_label
from server.settings import resolve_config

Samples = list[tuple[str, dict[str, str], float]]


def scrape(root: str, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(root + "/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items()))


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {ls[label] for n, ls, _ in samples if n == name and label in ls}


def _post(url: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(url + "/responses", json=body, timeout=30, **kwargs)


def test_requests_latency_tokens_errors_and_store_are_counted_exactly(make_bridge: Any) -> None:
    bridge = make_bridge(metrics=True, store="memory")
    client = openai.OpenAI(base_url=bridge.url, api_key="x", max_retries=0, timeout=30)
    usage_in = usage_out = 0
    for i in range(2):
        response = client.responses.create(model="fixture-scripted", input=f"@text plain {i}")
        assert response.output_text == f"plain {i}"
        assert response.usage is not None
        usage_in += response.usage.input_tokens
        usage_out += response.usage.output_tokens
    with client.responses.stream(model="fixture-scripted", input="@text one two three") as stream:
        final = stream.get_final_response()
    assert final.output_text == "one two three" and final.usage is not None
    usage_in += final.usage.input_tokens
    usage_out += final.usage.output_tokens
    # an upstream error answer (429), a stream the backend cuts, a model the bridge does not route
    assert _post(bridge.url, {"model": "chaos:status-429", "input": "hi", "store": False}).status_code == 429
    cut = _post(bridge.url, {"model": "chaos:cut", "input": "hi", "stream": True, "store": False})
    assert cut.status_code == 200 and "response.failed" in cut.text
    assert httpx.get(bridge.url + "/responses/resp_nosuch", timeout=30).status_code == 404

    samples = scrape(bridge.root)
    ok = {"method": "POST", "route": "/v1/responses", "upstream": "fixture"}
    assert value(samples, "responses_bridge_requests_total", **ok, status="200", model="fixture-scripted") == 3
    # the 429's model was never answered, so it is not a label of its own; the cut stream's was (200)
    assert value(samples, "responses_bridge_requests_total", **ok, status="429", model="other") == 1
    assert value(samples, "responses_bridge_requests_total", **ok, status="200", model="chaos:cut") == 1
    # the route is the template, not the raw path with the id
    assert value(samples, "responses_bridge_requests_total", method="GET", route="/v1/responses/{response_id}",
                 status="404", upstream="", model="") == 1  # fmt: skip
    assert not any("resp_nosuch" in ls.get("route", "") for _, ls, _ in samples)

    assert value(samples, "responses_bridge_request_duration_seconds_count", route="/v1/responses") == 5
    assert value(samples, "responses_bridge_request_duration_seconds_bucket", route="/v1/responses", le="+Inf") == 5
    assert value(samples, "responses_bridge_time_to_first_token_seconds_count", model="fixture-scripted",
                 stream="true") == 1  # fmt: skip
    assert value(samples, "responses_bridge_time_to_first_token_seconds_count", model="fixture-scripted",
                 stream="false") == 2  # fmt: skip
    assert usage_in > 0 and usage_out > 0
    assert value(samples, "responses_bridge_input_tokens_total", upstream="fixture", model="fixture-scripted") == usage_in
    assert value(samples, "responses_bridge_output_tokens_total", upstream="fixture", model="fixture-scripted") == usage_out

    assert value(samples, "responses_bridge_upstream_errors_total", upstream="fixture", code="rate_limit_exceeded") == 1
    assert value(samples, "responses_bridge_upstream_errors_total", upstream="fixture", code="upstream_error") == 1
    assert value(samples, "responses_bridge_upstream_errors_total") == 2

    assert value(samples, "responses_bridge_streams_in_flight") == 0
    # three stored answers (the chaos requests said store: false), one lookup of the unknown id
    assert value(samples, "responses_bridge_store_operation_seconds_count", operation="put") == 3
    assert value(samples, "responses_bridge_store_operation_seconds_count", operation="get") == 1


def test_streams_in_flight_while_a_stream_is_open(make_bridge: Any) -> None:
    bridge = make_bridge(metrics=True, store="none")
    body = {"model": "chaos:stall", "input": "hi", "stream": True}
    with httpx.Client(timeout=30) as http, http.stream("POST", bridge.url + "/responses", json=body) as stream:
        assert stream.status_code == 200
        chunks = stream.iter_raw()  # kept: a dropped iterator closes the response
        assert b"response.created" in next(chunks)  # the stream is open
        now = scrape(bridge.root)
        assert value(now, "responses_bridge_streams_in_flight", upstream="fixture") == 1
    deadline = time.monotonic() + 20  # the client left: the pump closes once the bridge notices
    while value(scrape(bridge.root), "responses_bridge_streams_in_flight") != 0:
        assert time.monotonic() < deadline, "the gauge never went back to 0"
        time.sleep(0.05)


def test_invented_model_names_add_a_bounded_number_of_series(make_bridge: Any) -> None:
    bridge = make_bridge(metrics=True, store="none")
    extra = 5
    with httpx.Client(timeout=30) as http:
        for i in range(MODEL_LABEL_LIMIT + extra):
            answer = http.post(bridge.url + "/responses", json={"model": f"made-up-{i}", "input": "@text x"})
            assert answer.status_code == 200
    samples = scrape(bridge.root)
    models = label_values(samples, "responses_bridge_requests_total", "model")
    assert len(models - {"other", ""}) == MODEL_LABEL_LIMIT
    assert value(samples, "responses_bridge_requests_total", model="other") == extra
    assert len(label_values(samples, "responses_bridge_input_tokens_total", "model")) == MODEL_LABEL_LIMIT + 1


def test_configured_model_names_are_labels_even_when_they_fail(make_bridge: Any) -> None:
    bridge = make_bridge(metrics=True, store="none",
                         upstream={"models": ("chaos:status-503", "fixture-scripted")})  # fmt: skip
    failed = _post(bridge.url, {"model": "chaos:status-503", "input": "hi"})
    assert failed.status_code >= 500
    code = failed.json()["error"]["code"]
    assert _post(bridge.url, {"model": "not-routed", "input": "hi"}).status_code == 404
    samples = scrape(bridge.root)
    assert value(samples, "responses_bridge_requests_total", status=str(failed.status_code),
                 model="chaos:status-503") == 1  # fmt: skip
    assert value(samples, "responses_bridge_upstream_errors_total", upstream="fixture",
                 code=error_code_label(code, failed.status_code)) == 1  # fmt: skip
    assert value(samples, "responses_bridge_upstream_errors_total") == 1
    assert value(samples, "responses_bridge_requests_total", status="404", upstream="", model="") == 1


def test_metrics_need_the_api_key_when_keys_are_set(make_bridge: Any) -> None:
    bridge = make_bridge(metrics=True, api_keys=("sk-metrics",), store="none")
    denied = httpx.get(bridge.root + "/metrics", timeout=30)
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(bridge.root + "/metrics", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    assert _post(bridge.url, {"model": "fixture-scripted", "input": "hi"}).status_code == 401
    samples = scrape(bridge.root, headers={"Authorization": "Bearer sk-metrics"})
    assert value(samples, "responses_bridge_requests_total", route="/v1/responses", status="401") == 1
    assert value(samples, "responses_bridge_requests_total", route="/metrics", status="401") == 2


def test_metrics_are_off_by_default(make_bridge: Any) -> None:
    bridge = make_bridge(store="none")
    assert bridge.app.state.metrics is None
    assert httpx.get(bridge.root + "/metrics", timeout=30).status_code == 404


def test_settings_from_flag_environment_and_file(tmp_path: Any) -> None:
    base = {"upstream": "http://127.0.0.1:9/v1"}
    assert resolve_config(base, {}).metrics_enabled is False
    assert resolve_config({**base, "metrics": True}, {}).metrics_enabled is True
    assert resolve_config(base, {"RESPONSES_BRIDGE_METRICS": "1"}).metrics_enabled is True
    by_port = resolve_config(base, {"RESPONSES_BRIDGE_METRICS_PORT": "9464"})
    assert (by_port.metrics_enabled, by_port.metrics_port, by_port.metrics_host) == (True, 9464, "127.0.0.1")
    config_file = tmp_path / "bridge.toml"
    config_file.write_text('metrics = true\nmetrics_host = "0.0.0.0"\nmetrics_port = 9100\n')
    from_file = resolve_config({**base, "config": str(config_file)}, {})
    assert (from_file.metrics, from_file.metrics_host, from_file.metrics_port) == (True, "0.0.0.0", 9100)
