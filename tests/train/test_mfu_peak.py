"""MFU's denominator is an upper bound users can trust: on CPU the theoretical peak (never below what a timed matmul
reaches, so MFU <= 100% even when the machine is busy), printed with its source at start-up."""
import torch

from mythos.train.metrics import cpu_peak_flops, measured_cpu_matmul_flops, peak_flops


def test_cpu_peak_is_an_upper_bound_of_the_matmul_rate():
    peak = cpu_peak_flops(torch.float32)
    assert peak >= measured_cpu_matmul_flops(n=512, trials=5)
    assert "FLOP/cycle" in peak.source or "timed" in peak.source


def test_peak_is_printed_with_its_source(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    peak = peak_flops(torch.device("cpu"), 0.0)
    out = capsys.readouterr().out
    assert out.startswith("MFU peak: ") and peak.source in out
    configured = peak_flops(torch.device("cpu"), 312.0)
    assert configured == 312e12 and "metrics.peak_tflops" in capsys.readouterr().out
    monkeypatch.setenv("RANK", "1")
    peak_flops(torch.device("cpu"), 0.0)
    assert capsys.readouterr().out == ""  # only rank 0 prints
