"""GET /metrics of the real service, behind its token, in Prometheus' text format, parsed with
prometheus_client's own parser: transfers by state, bytes and objects per route, throughput,
retries (through a proxy that answers 503s) and failed objects by kind."""
import os
import time

from prometheus_client.parser import text_string_to_metric_families

from test_faults import proxied
from test_service import Service


def scrape(service) -> dict:
    """Every sample, by (name, labels as a sorted tuple)."""
    response = service.call("GET", "/metrics")
    assert response.status == 200, response.data
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4"), response.headers
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.data.decode()) for s in family.samples}


def test_metrics_need_the_token_and_count_transfers_bytes_retries_and_errors(env):
    files = {f"f{i}.bin": os.urandom(10_000 + i) for i in range(4)}
    for path, data in files.items():
        env.put("awss3", f"{env.prefix}/src/{path}", data)
    with proxied(env, "azure", "flaky", error_rate=1.0, faults_left=3, match=("PUT", r".")) as proxy:
        service = Service(env.environ(), env.config_dir)
        try:
            assert service.call("GET", "/metrics", token=None).status == 401
            assert service.call("GET", "/metrics", token="wrong").status == 401
            before = scrape(service)
            assert before[("cms_transfer_transfers", (("state", "completed"),))] == 0
            service.json("POST", "/transfers", {"source": f"awss3:{env.prefix}/src", "target": f"flaky:{env.prefix}/dst",
                                                "recursive": True, "id": "ok"}, expect=202)
            assert service.wait("ok")["state"] == "completed"
            assert proxy.faults["error"] == 3
            env.put("awss3", f"{env.prefix}/bad/trailing.", b"x")  # a name Azure cannot store
            service.json("POST", "/transfers", {"source": f"awss3:{env.prefix}/bad", "target": f"azure:{env.prefix}/bad",
                                                "recursive": True, "id": "bad"}, expect=202)
            assert service.wait("bad")["objects_failed"] == 1
            after = scrape(service)
        finally:
            service.stop()
    route = (("route", "awss3->azureblob"),)
    assert after[("cms_transfer_transfers", (("state", "completed"),))] >= 1
    assert after[("cms_transfer_bytes_total", route)] >= sum(map(len, files.values()))
    assert after[("cms_transfer_objects_total", route)] >= len(files)
    retries = {k[1]: v for k, v in after.items() if k[0] == "cms_transfer_retries_total"}
    assert retries == {(("kind", "azure sdk"),): 3}, retries  # the SDK's own retries of the blobs' PUTs
    errors = {k[1]: v for k, v in after.items() if k[0] == "cms_transfer_errors_total"}
    assert errors == {(("kind", "UsageError"),): 1}, errors
    assert ("cms_transfer_throughput_bytes_per_second", ()) in after
