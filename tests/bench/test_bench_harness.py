"""The benchmark harness keeps working: tiny runs produce figures and a record.

Never asserts on speed (the figures of a shared 2-core machine drift); only that each benchmark
ran the gateway as real processes and measured something beside its ceiling.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.benchmarks import Context, Sizes, bench_callbacks, bench_campaign, bench_e2e

from bench import run

TINY = Sizes(single_seconds=0.5, campaign=200, e2e=200, raw_echo=200, e2e_latency=200,
             callbacks=50)

pytestmark = pytest.mark.slow


def test_run_command_prints_and_records_campaign_and_get_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "benchmarks.md"
    code = run.main(["--quick", "--db", "sqlite", "--only", "campaign,get_message",
                     "--record", str(record)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| campaign | sqlite |" in printed and "| get_message | sqlite |" in printed
    text = record.read_text()
    assert text.startswith("# Benchmarks") and "## Runs" in text
    assert "commit " in text and "cores" in text


def test_campaign_figures_stand_beside_the_bulk_write_ceiling(tmp_path: Path) -> None:
    figures = bench_campaign(Context("sqlite", TINY, tmp_path), write=True, read=True)
    campaign = figures[0]
    assert campaign.bench == "campaign" and campaign.value > 0
    assert campaign.ceiling is not None and campaign.ratio is not None
    assert {"campaign", "get_message"} <= {f.bench for f in figures}


def test_end_to_end_over_smpp_measures_parts_and_the_raw_echo_rate(tmp_path: Path) -> None:
    (figure,) = bench_e2e(Context("sqlite", TINY, tmp_path))
    assert figure.value > 0 and figure.ceiling and figure.ceiling > 0
    assert "still not final" not in figure.note


def test_callbacks_are_counted_by_the_receiver(tmp_path: Path) -> None:
    (figure,) = bench_callbacks(Context("sqlite", TINY, tmp_path))
    assert figure.value > 0 and figure.ceiling and figure.ceiling > 0


def test_only_rejects_an_unknown_benchmark() -> None:
    with pytest.raises(SystemExit):
        run.selected(["nope"])
