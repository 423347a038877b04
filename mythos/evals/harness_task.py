"""Metric functions of the `mythos_val` lm-eval task (copied next to its generated YAML by mythos/evals/harness.py).

Per document: (loglikelihood, tokens) and (loglikelihood, UTF-8 bytes); aggregated over all documents as nats per
token (the unit of mythos-eval's validation loss) and bits per byte (tokenizer-independent, the right comparison
across vocabularies)."""
import math


def process_results(doc, results):
    (loglikelihood,) = results
    return {"nats_per_token": (loglikelihood, int(doc["n_tokens"])),
            "bits_per_byte": (loglikelihood, len(doc["text"].encode("utf-8")))}


def nats_per_token(items):
    return -sum(ll for ll, _ in items) / sum(n for _, n in items)


def bits_per_byte(items):
    return -sum(ll for ll, _ in items) / sum(n for _, n in items) / math.log(2)
