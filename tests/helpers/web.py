"""Reading the service's HTTP endpoints the way Prometheus and people do."""

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# Tests talk to loopback services only; a proxy from the environment must not
# be asked for them.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    """Status and body; an HTTP error status is an answer, not an exception."""
    try:
        with _OPENER.open(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(base_url: str) -> Samples:
    """Every sample of ``/metrics``, keyed by name and sorted labels."""
    status, text = get(base_url + "/metrics")
    assert status == 200, text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value

    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def answers(url: str) -> bool:
    try:
        get(url, timeout=1)
    except OSError:
        return False
    return True
